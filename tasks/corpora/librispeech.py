"""LibriSpeech -> ``asr`` and ``pr`` manifests (SUPERB: train-clean-100 / dev-clean / test-clean).

Standard layout (ROOT may be the ``LibriSpeech`` folder or the folder it was unpacked into)::

    ROOT/{train-clean-100,dev-clean,test-clean,...}/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac
    ROOT/{...}/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt      # "SPEAKER-CHAPTER-UTT TEXT" lines

ASR transcriptions are the upper-case texts. PR transcriptions are space-separated phones:

- with ``lexicon`` (``harness corpus prepare librispeech --lexicon PATH``), SUPERB's phone set:
  each word's first pronunciation in LibriSpeech's ``librispeech-lexicon.txt`` (from its
  language-model resources; ``WORD PH1 PH2 ...`` per line), ARPAbet with the stress digits
  stripped as Kaldi's recipe does (``AH0`` -> ``AH``). An utterance with a word the lexicon lacks
  is reported (and left out only with ``--skip-bad``), never phonemized without that word;
- without one, IPA phones from the eSpeak NG phonemizer that also made SynthSpeech's phones
  (:func:`tasks.corpora.espeak.phonemize`), computed here once, offline.

``corpus.json`` says which phone set the PR manifests use (``params.phone_set``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from core.files import sha256_file
from core.paths import portable_path
from tasks.corpora.espeak import phonemize
from tasks.corpora.prepare_common import (
    BadFile,
    Utterance,
    check_audio,
    find_root,
    handle_bad,
    layout_error,
    write_corpus,
)

logger = logging.getLogger(__name__)

SUBSET = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")
SUPERB_SPLITS = {"train": ("train-clean-100",), "valid": ("dev-clean",), "test": ("test-clean",)}
EXPECTED_LAYOUT = """\
  ROOT/train-clean-100/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac
  ROOT/train-clean-100/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt
  ROOT/dev-clean/..., ROOT/test-clean/...   (ROOT = the LibriSpeech folder or its parent)"""


def find_subsets(root: Path) -> list[str]:
    """Names of the LibriSpeech subsets (``dev-clean``, ``train-clean-100``, ...) directly under ``root``."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and SUBSET.match(p.name)) if root.is_dir() else []


def default_splits(subsets: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """SUPERB's mapping; without train-clean-100, every ``train-*`` subset present is the train split."""
    splits = dict(SUPERB_SPLITS)
    if "train-clean-100" not in subsets:
        splits["train"] = tuple(s for s in subsets if s.startswith("train-")) or SUPERB_SPLITS["train"]
        if splits["train"] != SUPERB_SPLITS["train"]:
            logger.info("librispeech: no train-clean-100; training on %s", ", ".join(splits["train"]))
    return splits


#: ``params.phone_set`` of corpus.json: which phones the PR manifests hold.
PHONE_SETS = {"lexicon": "arpabet-no-stress (librispeech lexicon)", "espeak": "ipa (espeak-ng en-us)"}
STRESS = re.compile(r"[0-9]+$")


def read_lexicon(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """``WORD PH1 PH2 ...`` per line -> upper-case word -> phones without stress digits.

    The first pronunciation of a word wins (the lexicon lists variants on later lines).

    Raises:
        FileNotFoundError, ValueError: naming the file (and the line of a word without phones).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--lexicon {path}: no such file (LibriSpeech's librispeech-lexicon.txt)")
    lexicon: dict[str, tuple[str, ...]] = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            word, *phones = line.split()
            if not phones:
                raise ValueError(f"--lexicon {path}:{number}: word {word!r} has no phones; expected 'WORD PH1 PH2 ...'")
            lexicon.setdefault(word.upper(), tuple(STRESS.sub("", phone) for phone in phones))
    if not lexicon:
        raise ValueError(f"--lexicon {path}: no entries")
    return lexicon


def prepare_librispeech(
    root: str | os.PathLike,
    out: str | os.PathLike,
    skip_bad: bool = False,
    splits: Mapping[str, str | Sequence[str]] | None = None,
    lexicon: str | os.PathLike | None = None,
) -> Path:
    """Write ``asr`` and ``pr`` manifests for LibriSpeech under ``out``; returns ``out``.

    Args:
        root: the ``LibriSpeech`` folder, or its parent.
        out: where manifests and ``corpus.json`` go.
        skip_bad: leave out unusable audio (listed in ``corpus.json``) instead of failing.
        splits: split -> subset name(s), e.g. ``{"train": ["train-clean-100", "train-clean-360"]}``;
            splits not given keep :func:`default_splits`.
        lexicon: LibriSpeech's ``librispeech-lexicon.txt``: PR in SUPERB's phone set (see the module
            docstring); None: eSpeak NG IPA.

    Raises:
        ManifestError: ``root`` is not LibriSpeech, a subset is missing, or bad audio without ``skip_bad``.
    """
    corpus_root = find_root(root, lambda p: bool(find_subsets(p)), nested=("LibriSpeech",))
    if corpus_root is None:
        raise layout_error("LibriSpeech", root, "no train-*/dev-*/test-* subset folders", EXPECTED_LAYOUT)
    subsets = find_subsets(corpus_root)
    chosen = default_splits(subsets)
    for split, names in (splits or {}).items():
        if split not in chosen:
            raise ValueError(f"librispeech: unknown split {split!r} in splits; use train, valid, test")
        chosen[split] = (names,) if isinstance(names, str) else tuple(names)
    missing = sorted({name for names in chosen.values() for name in names} - set(subsets))
    if missing:
        raise layout_error(
            "LibriSpeech",
            corpus_root,
            f"missing subset(s) {', '.join(missing)} (found: {', '.join(subsets)})",
            EXPECTED_LAYOUT,
        )

    words = read_lexicon(lexicon) if lexicon is not None else None  # a bad lexicon fails before any audio is read
    utterances, bad = [], []
    for split, names in chosen.items():
        for name in names:
            found, unusable = read_subset(corpus_root / name, split)
            utterances += found
            bad += unusable
    good, unreadable = check_audio(utterances, "librispeech")
    skipped = handle_bad(bad + unreadable, "librispeech", corpus_root, skip_bad)  # fail before phonemizing
    texts = sorted({utt.fields["transcription"] for utt in good})
    if words is not None:
        phones, missing = lexicon_phones(texts, words)
        unknown = [
            BadFile(utt.path, f"word(s) {', '.join(missing[utt.fields['transcription']])} not in the lexicon {lexicon}")
            for utt in good
            if utt.fields["transcription"] in missing
        ]
        skipped += handle_bad(unknown, "librispeech", corpus_root, skip_bad, "utterance(s) with words missing from the lexicon")
    else:
        phones = phonemize_texts(texts)
    no_phones = [
        BadFile(utt.path, f"transcript {utt.fields['transcription']!r} gives no phones")
        for utt in good
        if utt.fields["transcription"] in phones and not phones[utt.fields["transcription"]]
    ]
    skipped += handle_bad(no_phones, "librispeech", corpus_root, skip_bad)

    tables: dict[tuple[str, str], list[dict]] = {}
    for utt in good:
        if phones.get(utt.fields["transcription"]):
            tables.setdefault(("asr", utt.split), []).append(utt.row())
            tables.setdefault(("pr", utt.split), []).append(utt.row(transcription=phones[utt.fields["transcription"]]))
    params = {"splits": {k: list(v) for k, v in chosen.items()}, "skipped": skipped}
    if words is not None:
        params |= {"phone_set": PHONE_SETS["lexicon"], "phonemizer": "lexicon",
                   "lexicon": {"path": portable_path(lexicon), "sha256": sha256_file(lexicon), "words": len(words)}}  # fmt: skip
    else:
        params |= {"phone_set": PHONE_SETS["espeak"], "phonemizer": "espeak-ng en-us"}
    columns = {"asr": ["transcription"], "pr": ["transcription"]}
    return write_corpus(out, "librispeech", corpus_root, tables, columns, params)


def read_subset(subset_dir: Path, split: str) -> tuple[list[Utterance], list[BadFile]]:
    """Utterances of one subset from its ``*.trans.txt`` files; audio without a transcript is bad."""
    utterances, bad = [], []
    listed: set[Path] = set()
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        speaker = trans.parent.parent.name
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            flac = trans.parent / f"{utt_id}.flac"
            listed.add(flac)
            if not text.strip():
                bad.append(BadFile(flac, f"empty transcript at {trans}:{number}"))
                continue
            text = " ".join(text.upper().split())
            utterances.append(Utterance(utt_id, flac, speaker, split, {"transcription": text}))
    for flac in sorted(set(subset_dir.glob("*/*/*.flac")) - listed):
        bad.append(BadFile(flac, f"no transcript line in {flac.parent.parent.name}-{flac.parent.name}.trans.txt"))
    if not utterances and not bad:
        logger.warning("librispeech: %s holds no transcripts", subset_dir)
    return utterances, bad


def lexicon_phones(texts: Sequence[str], lexicon: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Phones of each text whose words are all in ``lexicon``, and the missing words of the others."""
    phones, missing = {}, {}
    for text in texts:
        absent = sorted({word for word in text.split() if word not in lexicon})
        if absent:
            missing[text] = absent
        else:
            phones[text] = " ".join(phone for word in text.split() for phone in lexicon[word])
    if missing:
        logger.warning("librispeech: %d transcript(s) hold words missing from the lexicon", len(missing))
    return phones, missing


def phonemize_texts(texts: Sequence[str]) -> dict[str, str]:
    """Space-separated IPA phones for each distinct text (eSpeak ignores case; it is lowered anyway)."""
    return {
        text: " ".join(phonemize(text.lower()))
        for text in tqdm(texts, desc="librispeech: phonemizing", unit="text", disable=None, mininterval=1.0)
    }
