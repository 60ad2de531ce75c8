"""MACs as the SUPERB challenge counts them, on a tiny LibriSpeech stand-in built in its real layout."""

from __future__ import annotations

import json

import pytest
import torch
from test_corpora_real import build_librispeech  # tests/test_corpora_real.py: the tiny tree

from harness.cli import main
from harness.evaluation import superb_macs
from tasks.audio import load_audio
from tasks.corpora import PREPARERS
from tasks.corpora.manifest import read_manifest
from upstreams.checkpoint import save_compact
from upstreams.cost import count_macs
from upstreams.model import SpeechEncoder, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_selection_is_every_82nd_utterance_by_length():
    durations = [(i * 7919) % 2620 / 100 + 1 for i in range(2620)]  # 2620 distinct lengths, shuffled
    ids = [f"u{i}" for i in range(2620)]
    chosen = superb_macs.challenge_selection(ids, durations)
    ranked = sorted(durations)
    assert [durations[i] for i in chosen] == [ranked[82 * i] for i in range(32)]
    assert durations[chosen[0]] == min(durations)
    with pytest.raises(ValueError, match=r"1 in 82 of 2543\+ utterances sorted by length; the set has 2000"):
        superb_macs.challenge_selection(ids[:2000], durations[:2000])


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """test-clean with 4 utterances: the protocol scaled down to 2 of them, every 2nd by length."""
    build_librispeech(tmp_path / "corpora")
    monkeypatch.setattr(superb_macs, "COUNT", 2)
    monkeypatch.setattr(superb_macs, "STRIDE", 2)
    return PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "libri")


def test_the_count_sums_each_chosen_utterance_run_alone(stand_in, tmp_path):
    from s3prl.nn import S3PRLUpstream

    import upstreams  # noqa: F401 - registers pruned_hubert

    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config("hubert")).eval()
    ckpt = save_compact(model, tmp_path / "tiny")
    counted = superb_macs.challenge_macs(S3PRLUpstream("pruned_hubert", path_or_url=str(ckpt)), stand_in, 2, 2)
    frame = read_manifest(stand_in, "asr", "test")
    by_length = frame.sort_values(["duration", "id"]).reset_index(drop=True)
    assert counted["macs_superb_utterances"] == [by_length["id"][0], by_length["id"][2]]
    expected = sum(count_macs(model, len(load_audio(by_length["wav_path"][i])) / 16000) for i in (0, 2))
    assert counted["macs_superb_g"] * 1e9 == pytest.approx(expected, rel=1e-3)
    assert superb_macs.applies(stand_in)


def test_librispeech_records_carry_the_challenge_macs(stand_in, tmp_path):
    torch.manual_seed(0)
    ckpt = save_compact(SpeechEncoder(tiny_config("hubert")).eval(), tmp_path / "tiny")
    assert main(["evaluate", "--upstream", "pruned_hubert", "--ckpt", str(ckpt), "--tasks", "asr", "--corpus",
                 f"librispeech:{stand_in}", "--preset", "demo", "--max-steps", "1", "--cache", str(tmp_path / "cache"),
                 "--records", str(tmp_path / "records")]) == 0  # fmt: skip
    (path,) = (tmp_path / "records").glob("*.json")
    upstream = json.loads(path.read_text())["upstream"]
    assert upstream["macs_superb_g"] > 0 and len(upstream["macs_superb_utterances"]) == 2
    assert upstream["macs_per_second"] > 0  # beside, not instead of, MACs per second of audio
