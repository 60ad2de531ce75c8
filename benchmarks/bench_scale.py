"""Benchmark: what evaluation costs at real-corpus scale, for a HuBERT-Base-shaped upstream.

    .venv/bin/python benchmarks/bench_scale.py --corpus data/synth-tiny --audio-minutes 3 --steps 40

On this device, with a random-weight HuBERT Base (13 hidden states x 768, 94.7 M parameters)
through s3prl's ``pruned_hubert`` entry and a few minutes of the corpus' SID training audio:

1. extraction throughput (audio hours per wall hour, ``--extract-dtype`` autocast);
2. cache bytes per audio hour of a ``frames`` entry (float16 frames) and a ``pooled`` entry
   (float32 per-utterance means of every state), from the files the cache wrote;
3. head step time, interleaved in blocks (frames, pooled, frames, ...), median of the blocks: the
   SID head on frames and on pooled statistics, the ASR demo head on cached frames and online
   (the upstream inside the loop; a tenth of the steps, at least 3);

then extrapolates to LibriSpeech train-clean-100 + dev-clean + test-clean (ASR, PR: frames),
VoxCeleb1 (SID) and Fluent Speech Commands (SLU), each as frames and as pooled statistics: cache
size, and hours to extract once on this device. Corpus hours are the published sizes of those
corpora (the pooled size also needs the utterance count). Writes nothing outside a temporary
directory; prints one table per part.

Measured (2026-12-02, commit 8d23dc7 plus this script's online row, 2-core AMD EPYC, one torch thread,
beside the published leaderboard's two evaluation workers: load average about 3; SynthSpeech tiny,
64 SID training utterances = 3.0 min of audio)::

    entry    wall s   audio h / wall h   bytes / audio h
    frames     59.0               3.04   3.61 GB
    pooled     43.6               4.11   51.3 MB      (40 KB per utterance; these average 2.8 s)

    head          ms / step
    sid, frames      536.8
    sid, pooled        3.6   (150x faster)
    asr, frames      725.8
    asr, online    21502.7   (29.6x slower: the upstream runs in every step)

    LibriSpeech 100 h + dev/test-clean (asr, pr): 111.4 h, frames 402 GB, extract once 36.7 h
    VoxCeleb1 (sid): 352 h, frames 1,270 GB, pooled 6.1 GB, 115.9 h
    Fluent Speech Commands (slu): 19 h, frames 69 GB, pooled 1.2 GB, 6.3 h
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from harness.batching import BucketedBatches
from harness.evaluation.cache import FeatureCache
from harness.evaluation.entries import UpstreamSpec
from harness.evaluation.heads import DownstreamModel, SplitData, collate
from harness.evaluation.online import OnlineSet
from tasks.corpora.checksums import audio_identity
from tasks.corpora.manifest import read_manifest
from tasks.registry import get_task
from upstreams.checkpoint import save_compact
from upstreams.identity import checkpoint_hash
from upstreams.model import SpeechEncoder, base_config

#: (corpus, task, audio hours, utterances) across the splits SUPERB uses.
REAL_CORPORA = [
    ("LibriSpeech 100 h + dev/test-clean", "asr, pr", 111.4, 33_236),
    ("VoxCeleb1 (identification split)", "sid", 352.0, 153_516),
    ("Fluent Speech Commands", "slu", 19.0, 30_043),
]


def utterances_up_to(corpus: str, minutes: float) -> pd.DataFrame:
    frame = read_manifest(corpus, "sid", "train")
    frame = frame.sample(frac=1.0, random_state=0)
    return frame[frame["duration"].cumsum() <= minutes * 60]


def extract(cache: FeatureCache, spec, frame, upstream, kind: str, dtype_batch: float):
    identities = [audio_identity(p, {}) for p in frame["wav_path"]]
    start = time.perf_counter()
    features, _ = cache.get_or_extract(spec, list(frame["wav_path"]), identities, list(frame["duration"]),
                                       lambda: upstream, batch_seconds=dtype_batch, kind=kind)  # fmt: skip
    return features, time.perf_counter() - start, identities


def step_seconds(task_name: str, data: SplitData, steps: int) -> float:
    if data.features.kind == "online":
        steps = max(3, steps // 10)
    """Seconds per optimizer step of ``task_name``'s demo head on ``data``, after 3 warm-up steps."""
    task = get_task(task_name)
    task.fit_labels(data.references)
    targets = [task.encode(ref) for ref in data.references]
    preset = task.preset("demo")
    torch.manual_seed(0)
    model = DownstreamModel(data.features, task.build_head(data.features.hidden_size, preset.head))
    optimizer = torch.optim.Adam(model.parameters(), lr=preset.train.lr)
    batches = BucketedBatches(data.lengths, preset.train.batch_size, np.random.default_rng(0))
    times = []
    for step in range(steps + 3):
        batch = next(batches)
        start = time.perf_counter()
        features, lengths = collate(data, batch, "cpu")
        task.loss(model(features, lengths), lengths, [targets[i] for i in batch]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/synth-tiny", help="a prepared corpus with sid manifests")
    parser.add_argument("--audio-minutes", type=float, default=3.0, help="SID training audio to extract")
    parser.add_argument("--steps", type=int, default=40, help="timed head steps per block")
    parser.add_argument("--blocks", type=int, default=3, help="interleaved blocks per head")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extract-batch-seconds", type=float, default=32.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    from s3prl.nn import S3PRLUpstream

    import upstreams  # noqa: F401 - registers pruned_hubert in s3prl.hub

    frame = utterances_up_to(args.corpus, args.audio_minutes)
    hours = float(frame["duration"].sum()) / 3600
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ckpt = save_compact(SpeechEncoder(base_config("hubert")).eval(), Path(tmp) / "hubert-base-random")
        upstream = S3PRLUpstream("pruned_hubert", path_or_url=str(ckpt)).eval()
        spec = UpstreamSpec("pruned_hubert", str(ckpt), checkpoint_hash(ckpt))
        pooled_cache, frames_cache = FeatureCache(Path(tmp) / "pooled"), FeatureCache(Path(tmp) / "frames")
        pooled, pooled_s, identities = extract(pooled_cache, spec, frame, upstream, "pooled", args.extract_batch_seconds)
        frames, frames_s, _ = extract(frames_cache, spec, frame, upstream, "frames", args.extract_batch_seconds)
        frame_bytes = (frames.directory / "features.f16").stat().st_size
        mean_bytes = (pooled.directory / "means.npy").stat().st_size
        per_utterance_mean = mean_bytes / len(frame)

        print(f"\n## Extraction: HuBERT Base shape, {len(frame)} utterances, {hours * 60:.1f} min of audio, "
              f"{args.threads} thread(s)\n")  # fmt: skip
        print(pd.DataFrame([
            {"entry": "frames", "wall s": round(frames_s, 1), "audio h / wall h": round(hours * 3600 / frames_s, 2),
             "bytes / audio h": f"{frame_bytes / hours / 1e9:.2f} GB"},
            {"entry": "pooled", "wall s": round(pooled_s, 1), "audio h / wall h": round(hours * 3600 / pooled_s, 2),
             "bytes / audio h": f"{mean_bytes / hours / 1e6:.1f} MB"},
        ]).to_markdown(index=False))  # fmt: skip

        references = get_task("sid").references(frame)
        asr_frame = read_manifest(args.corpus, "asr", "train")
        asr_frame = asr_frame[asr_frame["wav_path"].isin(set(frame["wav_path"]))]
        asr_ids = [audio_identity(p, {}) for p in asr_frame["wav_path"]]
        data = {
            "sid, frames": ("sid", SplitData(frames, frames.rows(identities), references, list(frame["id"]))),
            "sid, pooled": ("sid", SplitData(pooled, pooled.rows(identities), references, list(frame["id"]))),
        }
        if len(asr_frame):  # the corpus' ASR manifests read the same audio (SynthSpeech's sentences do)
            asr_refs = get_task("asr").references(asr_frame)
            online = OnlineSet(list(asr_frame["wav_path"]), asr_ids, list(asr_frame["duration"]), lambda: upstream,
                               (frames.num_layers, frames.hidden_size, frames.downsample_rate))  # fmt: skip
            data["asr, frames"] = ("asr", SplitData(frames, frames.rows(asr_ids), asr_refs, []))
            data["asr, online"] = ("asr", SplitData(online, online.rows(asr_ids), asr_refs, []))
        times: dict[str, list[float]] = {name: [] for name in data}
        for _ in range(args.blocks):  # interleaved: A B C A B C ...
            for name, (task_name, split) in data.items():
                times[name].append(step_seconds(task_name, split, args.steps))
        print(f"\n## Head step time (demo heads, median of {args.blocks} interleaved blocks of {args.steps} steps)\n")
        frames_step = statistics.median(times["sid, frames"])
        print(pd.DataFrame([
            {"head": name, "ms / step": round(1000 * statistics.median(t), 2),
             "vs frames": (f"{frames_step / statistics.median(t):.1f}x faster" if name == "sid, pooled" else
                           f"{statistics.median(t) / statistics.median(times['asr, frames']):.1f}x slower"
                           if name == "asr, online" else "")}
            for name, t in times.items()
        ]).to_markdown(index=False))  # fmt: skip

        frames_per_hour, rate = frame_bytes / hours, hours * 3600 / frames_s
        rows = []
        for corpus, tasks, corpus_hours, utterances in REAL_CORPORA:
            rows.append({
                "corpus": corpus, "tasks": tasks, "audio h": corpus_hours,
                "frames cache": f"{corpus_hours * frames_per_hour / 1e9:,.0f} GB",
                "pooled cache": "" if tasks.startswith("asr") else f"{utterances * per_utterance_mean / 1e9:.1f} GB",
                "extract once": f"{corpus_hours / rate:,.1f} h",
            })  # fmt: skip
        print(f"\n## Extrapolated to real corpora on this device ({args.threads} thread(s))\n")
        print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
