"""The run-record format (core.records): one writer, a checked reader that names the file, and the
identity that the leaderboard and the resume logic share."""

from __future__ import annotations

import json

import pytest

from core.records import (
    RECORD_VERSION,
    Record,
    RecordError,
    TaskInfo,
    identity,
    load_record,
    load_records,
    write_record,
)


def make(upstream="fbank", ckpt=None, task="sid", value=50.0, preset="demo"):
    return Record.create(
        task=TaskInfo(task, ("accuracy",), "accuracy", True),
        metrics={"test": {"accuracy": value}},
        upstream={"name": upstream, "ckpt_sha256": ckpt},
        corpus={"name": "synthspeech", "fingerprint": "f00d"},
        config={"preset": preset},
        sections={"seeds": {"train": 0}},
        extra={"command": "harness evaluate"},
    )


def test_written_records_read_back_equal_and_in_the_documented_layout(tmp_path):
    record = make()
    path = write_record(record, tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data)[:8] == ["record_version", "date", "task", "main_score", "metrics", "upstream", "corpus", "config"]
    assert data["main_score"] == {"name": "accuracy", "value": 50.0, "higher_is_better": True, "split": "test"}
    loaded = load_record(path)
    assert loaded == record and loaded.path == path and loaded.command == "harness evaluate"
    assert loaded.to_dict() == data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read the record"),
        ("[1, 2]", "a record is a JSON object"),
        ('{"date": "x"}', "no record_version"),
        (json.dumps({"record_version": RECORD_VERSION + 1}), "newer than this code reads"),
        (json.dumps({"record_version": 1, "date": "x", "task": {}, "main_score": {}, "metrics": {}, "upstream": {},
                     "corpus": {}, "config": {}}), "bad task, main_score or upstream"),  # fmt: skip
        (json.dumps({"record_version": 1, "date": "x", "task": [], "main_score": {}}), "'task' must be a JSON dict"),
    ],
)
def test_a_bad_record_is_refused_naming_its_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RecordError, match=message) as error:
        load_record(path)
    assert str(path) in str(error.value)


def test_load_records_skips_bad_files_with_a_warning_or_raises_when_strict(tmp_path, caplog):
    write_record(make(), tmp_path)
    (tmp_path / "zz-broken.json").write_text("{", encoding="utf-8")
    assert len(load_records(tmp_path)) == 1 and "zz-broken.json" in caplog.text
    with pytest.raises(RecordError, match="zz-broken.json"):
        load_records(tmp_path, strict=True)
    assert load_records(tmp_path / "none-yet") == []
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(RecordError, match="is a file"):
        load_records(tmp_path / "file")


def test_identity_tells_evaluations_apart():
    assert identity(make()) == identity(make(value=10.0))  # the same evaluation, another result
    assert identity(make()) != identity(make(ckpt="abc"))
    assert identity(make()) != identity(make(task="slu"))
    assert identity(make()) != identity(make(preset="paper"))
    assert identity(make()).section == ("synthspeech", "f00d", "demo")


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("upstream", "params", "big", "upstream.params must be a number or null, got 'big'"),
        ("config", "preset", ["demo"], "config.preset must be a string or null"),
        ("upstream", "compression", "dphubert", "upstream.compression must be an object or null"),
        ("metrics", "test", [50.0], "metrics.test must map metric names to numbers"),
        ("seeds", "train", "0", "seeds.train must be an integer or null"),
        ("per_utterance", "ids", ["u1"], "per_utterance must hold lists ids, numerator, denominator of one length"),
    ],
)
def test_a_record_of_the_wrong_shape_is_refused_naming_its_file_and_field(section, field, value, message, tmp_path, caplog):
    import logging

    from harness.cli import main

    data = make().to_dict()
    data.setdefault(section, {})[field] = value
    write_record(make(upstream="hubert"), tmp_path)
    path = tmp_path / "zz-edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RecordError, match=message) as error:
        load_record(path)
    assert str(path) in str(error.value)
    # the leaderboard skips it with that warning instead of failing on it later, without the file's name
    with caplog.at_level(logging.WARNING):
        assert main(["leaderboard", "--records", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert f"skipping {path}: {message}" in caplog.text
