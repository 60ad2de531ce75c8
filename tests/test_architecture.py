"""The layout holds: imports point one way between packages, no package has an import circle, and
every command's defaults are its config's (each default written once)."""

from __future__ import annotations

import argparse

import pytest
from import_graph import find_cycles, import_graph, imported_names, modules  # tests/import_graph.py

from harness.cli import build_parser
from harness.commands import default_of

PACKAGES = ("core", "upstreams", "tasks", "leaderboard", "harness", "studies")
#: What each package may import of the others (its floors).
ALLOWED = {
    "core": set(),
    "upstreams": {"core"},
    "tasks": {"core", "upstreams"},
    "leaderboard": {"core", "tasks"},
    "harness": {"core", "upstreams", "tasks", "leaderboard"},
    "studies": {"core", "upstreams", "tasks", "leaderboard", "harness"},
}


def test_packages_import_only_their_floors():
    wrong = [
        f"{source} imports {target}"
        for source, targets in import_graph(PACKAGES).items()
        for target in targets
        if target.split(".")[0] != source.split(".")[0] and target.split(".")[0] not in ALLOWED[source.split(".")[0]]
    ]
    assert wrong == []


def test_no_import_circle_inside_any_package():
    # across packages the floors test applies; within one, no circle (import statements; the
    # registries' "module:attr" entries import by name on purpose, as lm-evaluation-harness's do)
    graph = import_graph(PACKAGES)
    inside = {source: {t for t in targets if t.split(".")[0] == source.split(".")[0]} for source, targets in graph.items()}
    assert find_cycles(inside) == []


def test_the_ground_floor_needs_no_torch():
    for path in modules(("core",)).values():
        names = {n.split(".")[0] for n in imported_names(path, ("core",))}
        assert "torch" not in names, path


# ------------------------------------------------------------------------------ defaults


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _defaults(parser: argparse.ArgumentParser) -> dict:
    return {a.dest: a.default for a in parser._actions if a.dest != "help"}


def test_every_command_shows_its_help(capsys):
    parser = build_parser()
    for path in (["run"], ["corpus", "synth"], ["corpus", "prepare"], ["pretrain"], ["compress"], ["evaluate"], ["leaderboard"]):
        with pytest.raises(SystemExit) as done:
            parser.parse_args([*path, "--help"])
        assert done.value.code == 0
        assert "usage: harness" in capsys.readouterr().out


def test_command_defaults_are_the_config_dataclasses_defaults():
    from core import paths
    from harness.evaluation.config import EvaluateConfig
    from harness.run import RunConfig
    from tasks.benchmarks import DEFAULT_BENCHMARK, get_benchmark

    parser = build_parser()
    run = _defaults(_subparser(parser, "run"))
    for option, field in [("upstream", "upstream"), ("tasks", "tasks"), ("methods", "methods"), ("corpus", "corpus"),
                          ("preset", "preset"), ("device", "device"), ("out", "out"), ("records", "records_dir"),
                          ("leaderboard", "leaderboard_dir"), ("cache", "cache_dir"), ("seed", "seed")]:  # fmt: skip
        assert run[option] == default_of(RunConfig, field), option
    assert run["sparsity"] is None and RunConfig().sparsities is None  # each method's own target

    evaluate = _defaults(_subparser(parser, "evaluate"))
    for option, field in [("preset", "preset"), ("device", "device"), ("records", "records_dir"), ("cache", "cache_dir"),
                          ("seed", "seed"), ("extract_dtype", "extract_dtype"),
                          ("extract_batch_seconds", "extract_batch_seconds")]:  # fmt: skip
        assert evaluate[option] == default_of(EvaluateConfig, field), option
    assert evaluate["tasks"] == ",".join(get_benchmark(DEFAULT_BENCHMARK).tasks)

    board = _defaults(_subparser(parser, "leaderboard"))
    assert (board["records"], board["out"]) == (paths.RECORDS_DIR, paths.LEADERBOARD_DIR)
    # one records directory for every command
    assert run["records"] == evaluate["records"] == board["records"] == paths.RECORDS_DIR
    assert run["device"] == evaluate["device"] == _defaults(_subparser(parser, "compress"))["device"] == "auto"
    assert _defaults(_subparser(parser, "pretrain"))["device"] == "auto"


def test_method_defaults_come_from_their_configs():
    from harness.compression.convexity import method as convexity
    from harness.compression.dphubert import method as dphubert
    from harness.compression.dphubert.options import DPHuBERTConfig
    from harness.compression.registry import METHODS
    from harness.pretrain import PRESETS as PRETRAIN_RECIPES
    from harness.pretrain import pretrain
    from tasks.corpora.synth import PRESETS as SIZES
    from tasks.corpora.synth import synthesize_corpus
    from tasks.schedules import SCHEDULES

    parser = build_parser()
    assert METHODS.get("dphubert").default_target == DPHuBERTConfig.sparsity
    assert _signature_default(dphubert.compress_dphubert, "sparsity") == DPHuBERTConfig.sparsity
    assert set(dphubert.PRESETS) == set(METHODS.get("dphubert").schedules) == set(SCHEDULES.names())
    assert set(convexity.MAX_POINTS) == set(METHODS.get("convexity").schedules) == set(SCHEDULES.names())
    compress = _subparser(parser, "compress")
    assert {a.dest for a in compress._actions} >= {"sparsity", "labels", "rule", "stage1_steps"}
    synth = _subparser(parser, "corpus", "synth")
    size = next(a for a in synth._actions if a.dest == "size")
    assert all(name in size.help for name in SIZES) and size.default == _signature_default(synthesize_corpus, "preset")
    assert {"--size", "--preset"} <= set(size.option_strings)  # the old spelling still works
    recipe = next(a for a in _subparser(parser, "pretrain")._actions if a.dest == "recipe")
    assert all(name in recipe.help for name in PRETRAIN_RECIPES) and recipe.default == _signature_default(pretrain, "preset")
    evaluate_preset = next(a for a in _subparser(parser, "evaluate")._actions if a.dest == "preset")
    assert list(evaluate_preset.choices) == SCHEDULES.names()


def _signature_default(function, name):
    import inspect

    return inspect.signature(function).parameters[name].default

