"""Defaults shared by the commands: the embedded teacher and where data goes."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The HuBERT teacher pretrained on SynthSpeech and shipped in the repository (see its MODEL_CARD.md).
DEFAULT_TEACHER = REPO / "upstreams" / "teachers" / "synth-hubert-tiny"
#: Corpora, feature caches and run outputs go under this folder of the current directory.
DATA_DIR = Path("data")
