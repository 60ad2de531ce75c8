"""``--corpus`` specifications -> prepared corpus directories, generating or preparing on first use.

    synth        SynthSpeech tiny under DATA_DIR/synth-tiny (generated on first use)
    synth:DIR    SynthSpeech in DIR (tiny; generated when DIR holds no corpus)
    NAME:PATH    a real corpus (librispeech, voxceleb1, fluent_commands, speech_commands) at PATH,
                 prepared into DATA_DIR/NAME-<hash of PATH> on first use (or PATH itself if prepared)
    DIR          any prepared corpus directory (corpus.json + manifests/)
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from core.paths import DATA_DIR
from tasks.corpora.synth_sizes import DEFAULT_SIZE as DEFAULT_SYNTH_SIZE

logger = logging.getLogger(__name__)

#: What ``--corpus`` means when not given: the embedded SynthSpeech.
DEFAULT_CORPUS = "synth"
SPEC_HELP = "synth (default; generated on first use), synth:DIR, NAME:PATH (a real corpus) or a prepared corpus dir"


def resolve_corpus(spec: str, data_dir: Path = DATA_DIR) -> Path:
    """Turn a ``--corpus`` value into a prepared corpus directory, generating or preparing it if needed."""
    if spec == "synth" or spec.startswith("synth:"):
        from tasks.corpora.synth import synthesize_corpus

        out = Path(spec.split(":", 1)[1]) if ":" in spec else data_dir / f"synth-{DEFAULT_SYNTH_SIZE}"
        if (out / "corpus.json").is_file():
            return out
        logger.info("generating SynthSpeech %s at %s (first use)", DEFAULT_SYNTH_SIZE, out)
        return Path(synthesize_corpus(out, preset=DEFAULT_SYNTH_SIZE, seed=0))
    if ":" in spec and not Path(spec).exists():
        from tasks.corpora import PREPARERS

        name, root = spec.split(":", 1)
        prepare = PREPARERS.get(name)  # unknown names raise with the known ones
        if (Path(root) / "corpus.json").is_file():
            return Path(root)
        out = data_dir / f"{name}-{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]}"
        if not (out / "corpus.json").is_file():
            logger.info("preparing %s from %s into %s (first use)", name, root, out)
            prepare(root, out)
        return out
    path = Path(spec)
    if not (path / "corpus.json").is_file():
        raise FileNotFoundError(
            f"--corpus {spec}: not a prepared corpus (no corpus.json); use synth, synth:DIR, NAME:PATH "
            "(librispeech, voxceleb1, fluent_commands, speech_commands) or run `harness corpus` first"
        )
    return path
