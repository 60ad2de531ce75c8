"""Where things go by default: the one home of every path default of the ``harness`` commands.

Relative paths are relative to the current directory, so a run's data, caches and results sit
beside the command that made them. The embedded teacher is found next to the installed code.
"""

from pathlib import Path

#: Corpora (generated or prepared on first use) go under this folder.
DATA_DIR = Path("data")
#: The feature cache, shared by every run.
CACHE_DIR = DATA_DIR / "cache"
#: Run outputs: compact checkpoints of ``harness run``, records, leaderboards.
RUNS_DIR = Path("runs")
RUN_OUT_DIR = RUNS_DIR / "run"
RECORDS_DIR = RUNS_DIR / "records"
LEADERBOARD_DIR = RUNS_DIR / "leaderboard"

#: Written by convexity pruning beside its checkpoint (curves per layer), read by the leaderboard.
CONVEXITY_FILE = "convexity.json"
#: Beside a compression that wrote several compact checkpoints: their subfolders, written last.
CHECKPOINTS_FILE = "checkpoints.json"

#: The HuBERT teacher pretrained on SynthSpeech and shipped with the code (see its MODEL_CARD.md).
EMBEDDED_TEACHER = Path(__file__).resolve().parent.parent / "upstreams" / "teachers" / "synth-hubert-tiny"
