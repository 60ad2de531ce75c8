"""``harness compress``: make a compact upstream from a teacher with one compression method.

Each method adds its options in a group of its own. Methods that build on others share their
options (the convexity-guided DPHuBERT takes convexity's ``--labels`` and DPHuBERT's
``--sparsity``, ...): a shared option is one option of the command, listed under the method that
registered first, and every method that declares it receives it. ``harness compress --method NAME
--help`` shows the common options and NAME's own, each worded and defaulted for NAME.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from core.paths import CACHE_DIR
from harness.compression.registry import METHODS
from harness.devices import DEFAULT_DEVICE, DEVICE_HELP
from tasks.corpora.resolve import DEFAULT_CORPUS, SPEC_HELP
from tasks.schedules import DEFAULT_SCHEDULE, SCHEDULES

logger = logging.getLogger(__name__)

EXAMPLES = [
    "harness compress --method convexity --labels all --rule peak --out runs/convexity",
    "harness compress --method convexity --labels speaker --finetune sid --out runs/convexity-sid",
    "harness compress --method dphubert --sparsity 0.75 --corpus synth --preset demo --out runs/dphubert-0.75",
    "harness compress --method distill --sparsity 0.75 --out runs/distill-0.75",
    "harness compress --method distill --loss layer2layer --sparsity 0.75 --out runs/distill-l2l-0.75",
    "harness compress --method convexity_dphubert --labels word --sparsity 0.75 --out runs/convexity_dphubert-0.75",
    "harness compress --method convexity --teacher facebook/hubert-base-ls960 --corpus speech_commands:/data/sc --labels word "
    "--out runs/hubert-cvx",
    "harness compress --method distill --help    (the common options and distill's own)",
]
LOADING = """The output directory is a compact checkpoint: load it with S3PRLUpstream("pruned_hubert", path_or_url=OUT)
after `import upstreams`, or evaluate it with `harness evaluate --upstream pruned_hubert --ckpt OUT`.
"""


def _epilog(method: str | None = None) -> str:
    """Examples (of ``method`` alone, when given) and how to load the result."""
    shown = [line for line in EXAMPLES if method is None or f"--method {method} " in line]
    return "examples:\n" + "".join(f"  {line}\n" for line in shown) + "\n" + LOADING


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a teacher (convexity, DPHuBERT, distillation or both) into a compact upstream",
        description=_description(METHODS.registered()),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    _add_common_arguments(parser)
    groups, shared = {}, _SharedOptions()
    for name in METHODS.registered():  # each method's own options, in a group of its own
        group = parser.add_argument_group(name, f"options of --method {name} (defaults: the preset's)")
        groups[name] = METHODS.get(name).add_arguments(shared.adding_to(group, name))
        if shared.borrowed:
            group.description += (f"; also takes {', '.join(shared.borrowed)}, listed above "
                                  f"(`--method {name} --help` shows them for {name})")  # fmt: skip
    # each method receives the options of its own group (their destinations are its keyword names)
    parser.set_defaults(func=_run, method_options=groups)


def _description(names: list[str]) -> str:
    return ("Compress a speech encoder into a compact checkpoint that loads as an s3prl upstream. Methods: "
            + "; ".join(f"{name}: {METHODS.get(name).help}" for name in names) + ".")  # fmt: skip


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-h", "--help", action=_MethodHelp,
                        help="show this help and exit; after --method NAME, only the common options and NAME's")
    parser.add_argument("--method", required=True, help=f"the compression method: {', '.join(METHODS.registered())}")
    parser.add_argument("--teacher", default=None,
                        help="compact dir, transformers dir or hub name, torchaudio:BUNDLE, fairseq .pt or DPHuBERT .pth "
                        "(default: the embedded SynthSpeech HuBERT teacher)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory (the compact checkpoint)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help=SPEC_HELP)
    parser.add_argument("--preset", default=DEFAULT_SCHEDULE, choices=SCHEDULES.names(),
                        help=f"the method's schedule: demo (CPU, minutes) or paper (the paper's) (default: {DEFAULT_SCHEDULE})")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR,
                        help="cache shared by runs, as harness evaluate's: methods that score the teacher's convexity keep "
                             f"the scores in CACHE/convexity for the next compression of that teacher (default: {CACHE_DIR})")


class _SharedOptions:
    """Adds each method's options to the command once: an option a method declares again (same
    flags, same type and action) is the one already there, and the method takes it too."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[argparse.Action, dict, str]] = {}
        self._group: argparse._ArgumentGroup | None = None
        self._method = ""
        self.borrowed: list[str] = []

    def adding_to(self, group: argparse._ArgumentGroup, method: str) -> _SharedOptions:
        self._group, self._method, self.borrowed = group, method, []
        return self

    def add_argument(self, *flags: str, **kwargs) -> argparse.Action:
        kind = {key: kwargs.get(key) for key in ("type", "action", "const", "choices", "nargs", "metavar")}
        if flags[0] in self._known:
            action, known_kind, owner = self._known[flags[0]]
            if known_kind != kind:
                raise ValueError(f"option {flags[0]} of --method {self._method} differs from --method {owner}'s")
            self.borrowed.append(flags[0])
            return action
        action = self._group.add_argument(*flags, **kwargs)
        self._known[flags[0]] = (action, kind, self._method)
        return action


class _MethodHelp(argparse.Action):
    """``--help``: the whole command's, or after ``--method NAME`` only the common options and NAME's own."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):  # noqa: A002
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        name = getattr(namespace, "method", None)
        if name in METHODS:
            parser = method_parser(parser.prog, name)
        parser.print_help()
        parser.exit()


def method_parser(prog: str, name: str) -> argparse.ArgumentParser:
    """The command's parser with only method ``name``'s options (for its ``--help``)."""
    parser = argparse.ArgumentParser(prog=prog, description=_description([name]), epilog=_epilog(name),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)  # fmt: skip
    _add_common_arguments(parser)
    METHODS.get(name).add_arguments(parser.add_argument_group(name, f"options of --method {name} (defaults: the preset's)"))
    return parser


def method_options(args: argparse.Namespace) -> dict:
    """The keyword options for ``--method``'s compress function: ``--seed`` and the given options of its group.

    Options left at None are not passed (the method's preset decides). An option of another
    method's group raises ``ValueError`` naming it, rather than being ignored.
    """
    groups: dict[str, list[str]] = args.method_options
    given = {name for names in groups.values() for name in names if getattr(args, name) is not None}
    own = set(groups.get(args.method, ()))
    foreign = sorted(given - own)
    if foreign:
        owners: dict[str, list[str]] = {}
        for method, names in groups.items():
            for name in names:
                owners.setdefault(name, []).append(method)
        flags = ", ".join(f"--{name.replace('_', '-')} (an option of --method {' / '.join(sorted(owners[name]))})"
                          for name in foreign)  # fmt: skip
        raise ValueError(f"--method {args.method} does not take {flags}")
    return {"seed": args.seed, **{name: getattr(args, name) for name in sorted(given & own)}}


def _run(args: argparse.Namespace) -> int:
    from core.paths import EMBEDDED_TEACHER
    from harness.commands import check_directories
    from harness.devices import resolve_device
    from tasks.corpora.resolve import resolve_corpus
    from upstreams.importers import check_source

    method = METHODS.get(args.method)
    options = method_options(args)
    teacher = args.teacher or str(EMBEDDED_TEACHER)
    # every option, the output and the teacher are checked before any work (corpus generation, scoring, training)
    resolve_device(args.device)
    check_directories(out=args.out, **({"cache": args.cache} if method.scores_cache_option else {}))
    method.check(args.preset, options, check_source(teacher, "--teacher"))
    logger.debug("%s options: %s", args.method, options)
    if method.scores_cache_option:
        options[method.scores_cache_option] = args.cache / "convexity"
    out = method.compress(teacher, args.out, corpus=resolve_corpus(args.corpus), preset=args.preset, device=args.device, **options)
    logger.info("compact checkpoint written to %s", out)
    return 0
