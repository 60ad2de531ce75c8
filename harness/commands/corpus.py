"""``harness corpus``: generate SynthSpeech, or prepare a real corpus into the common manifest layout."""

from __future__ import annotations

import argparse
import logging

from tasks.corpora.synth_sizes import DEFAULT_SIZE, SIZES

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    corpus = subparsers.add_parser("corpus", help="generate SynthSpeech or prepare a real corpus")
    actions = corpus.add_subparsers(dest="action", required=True, metavar="ACTION")

    synth = actions.add_parser(
        "synth",
        help="synthesise the embedded SynthSpeech corpus with eSpeak NG",
        description="Synthesise SynthSpeech: 16 kHz wavs, manifests for asr/pr/sid/slu/words, alignments, checksums. "
        "A complete corpus with the same preset and seed is reused; an interrupted one is resumed.",
        epilog="Example: harness corpus synth --out data/synth-tiny --size tiny --seed 0",
    )
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--size", "--preset", dest="size", default=DEFAULT_SIZE,
                       help=f"how much to make: {', '.join(SIZES)} (micro is for tests; default: {DEFAULT_SIZE}); "
                       "--preset is the old spelling")
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    synth.add_argument("--workers", type=int, default=None, help="synthesis processes, 1 or more (default: CPU count)")
    synth.set_defaults(func=_synth)

    prepare = actions.add_parser(
        "prepare",
        help="write manifests for a real corpus from its standard directory layout",
        description="Prepare librispeech, voxceleb1, fluent_commands or speech_commands. Audio stays where it is; "
        "the manifests point at it.",
        epilog="Example: harness corpus prepare librispeech --root /data/LibriSpeech --out data/librispeech",
    )
    prepare.add_argument("name", help="librispeech, voxceleb1, fluent_commands or speech_commands")
    prepare.add_argument("--root", required=True, help="the corpus' root directory, as distributed")
    prepare.add_argument("--out", required=True, help="where to write manifests and corpus.json")
    prepare.add_argument(
        "--skip-bad", action="store_true", help="leave out unreadable audio files (listed in corpus.json) instead of failing"
    )
    prepare.add_argument(
        "--lexicon", default=None, metavar="PATH",
        help="librispeech only: LibriSpeech's librispeech-lexicon.txt, for PR in SUPERB's phone set (ARPAbet, stress "
        "removed); without it PR uses eSpeak NG IPA phones",
    )  # fmt: skip
    prepare.set_defaults(func=_prepare)


def _synth(args: argparse.Namespace) -> int:
    from harness.commands import check_directories
    from tasks.corpora.synth import synthesize_corpus

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers} (leave it out for one per CPU core)")
    check_directories(out=args.out)

    root = synthesize_corpus(args.out, preset=args.size, seed=args.seed, workers=args.workers)
    logger.info("SynthSpeech ready at %s", root)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from harness.commands import check_directories
    from tasks.corpora import PREPARERS

    PREPARERS.get(args.name)  # an unknown name lists the known ones
    options = {"skip_bad": args.skip_bad}
    if args.lexicon is not None:
        if args.name != "librispeech":
            raise ValueError(f"--lexicon: only librispeech takes a lexicon (for its PR phones), not {args.name}")
        options["lexicon"] = args.lexicon
    check_directories(out=args.out)

    root = PREPARERS.get(args.name)(args.root, args.out, **options)
    logger.info("%s manifests ready at %s", args.name, root)
    return 0
