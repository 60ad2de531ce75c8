"""What a SUPERB-style downstream task is: metadata, labels, a head, a loss, a decoder and metrics.

A task is mostly declarative (in the manner of mteb): a subclass names its manifest, metrics,
main score and presets, and says how a reference label is read from a manifest row. Two families
share the machinery:

- :class:`CTCTask` (ASR, PR): frame-level head trained with CTC, greedy decoding, error rates.
- :class:`ClassificationTask` (SID, SLU): utterance-level head with one softmax per slot;
  a prediction is right only when every slot is right. Its head is linear up to the mean pooling,
  so it trains on pooled statistics (each layer's mean frame per utterance) where no crop is set.

A task instance holds its label vocabulary, fitted on the train split by :meth:`Task.fit_labels`;
the engine builds a fresh instance per run. Heads read the Featurizer's output
``[batch, frame, feature]`` with valid lengths ``[batch]``.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tasks.corpora.manifest import SLU_SEPARATOR, TASK_LABEL_COLUMN
from tasks.metrics import utterance_counts


@dataclass
class TrainConfig:
    """How a head is trained; SUPERB's values in the ``paper`` presets.

    Attributes:
        steps: optimizer steps.
        batch_size: utterances per micro-batch.
        grad_accum: micro-batches per optimizer step.
        lr: Adam learning rate.
        lr_grid: learning rates tried by ``--lr-sweep`` (best on valid wins).
        eval_every: steps between validations (and at the last step).
        grad_clip: max gradient norm.
        max_train_seconds: random crop of training utterances (SID: 8 s), ``None`` for none.
        eval_batch_size: utterances per batch at validation and test.
        warmup_fraction: with a value, the learning rate warms up linearly over this fraction of
            the steps and then decays linearly to 0 at the last step; ``None`` keeps it constant
            (SUPERB's schedules).
    """

    steps: int
    batch_size: int
    lr: float
    lr_grid: tuple[float, ...]
    eval_every: int
    grad_accum: int = 1
    grad_clip: float = 1.0
    max_train_seconds: float | None = None
    eval_batch_size: int = 32
    warmup_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "grad_accum", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"TrainConfig.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lr <= 0 or any(lr <= 0 for lr in self.lr_grid):
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, lr_grid={self.lr_grid}")


@dataclass
class TaskPreset:
    """A named size: the head's constructor arguments and the training schedule."""

    head: Any  # a task-specific head config dataclass
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"head": dataclasses.asdict(self.head), "train": dataclasses.asdict(self.train)}


class Task(abc.ABC):
    """A downstream task. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    manifest_task: ClassVar[str]  # which manifests/{task}/ the data comes from
    metric_names: ClassVar[tuple[str, ...]]
    main_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]
    level: ClassVar[str]  # "frame" or "utterance"
    presets: ClassVar[dict[str, TaskPreset]]
    #: The head is linear up to a mean over valid frames and has ``forward_pooled(means [B, D])``, so
    #: it trains exactly on each layer's per-utterance mean (a pooled cache entry) instead of frames.
    pools_linearly: ClassVar[bool] = False
    #: The label type whose convexity curve chooses this task's own cut of the teacher (``harness
    #: run``'s per-task convexity models): where the information the task needs gathers.
    convexity_labels: ClassVar[str] = "word"

    def manifest_for(self, corpus: str | os.PathLike) -> str:
        """Which ``manifests/NAME`` of ``corpus`` the task reads (``manifest_task``; KS falls back)."""
        return self.manifest_task

    def preset(self, name: str) -> TaskPreset:
        """The preset called ``name`` (a fresh copy, safe to modify)."""
        if name not in self.presets:
            raise ValueError(f"task {self.name!r} has no preset {name!r}; known: {', '.join(self.presets)}")
        preset = self.presets[name]
        return TaskPreset(head=dataclasses.replace(preset.head), train=dataclasses.replace(preset.train))

    def references(self, frame: pd.DataFrame) -> list:
        """The reference label of every manifest row, in the form :meth:`decode` predicts."""
        column = TASK_LABEL_COLUMN[self.manifest_task]
        return [self.parse_label(str(cell)) for cell in frame[column]]

    @abc.abstractmethod
    def parse_label(self, cell: str) -> Any:
        """Turn one manifest label cell into a reference."""

    @abc.abstractmethod
    def fit_labels(self, references: Sequence) -> None:
        """Build the label vocabulary from the training references."""

    @abc.abstractmethod
    def label_state(self) -> dict[str, Any]:
        """The fitted vocabulary, JSON-serialisable (goes into the run record)."""

    @abc.abstractmethod
    def encode(self, reference: Any) -> torch.Tensor:
        """Training target of one reference."""

    @abc.abstractmethod
    def build_head(self, input_size: int, config: Any) -> nn.Module:
        """The downstream head: ``forward(features [B, T, D], lengths [B]) -> output``."""

    @abc.abstractmethod
    def loss(self, output: Any, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        """Mean training loss of a batch."""

    @abc.abstractmethod
    def decode(self, output: Any, lengths: torch.Tensor) -> list:
        """Predictions of a batch, in the form of :meth:`references`."""

    @abc.abstractmethod
    def score(self, references: Sequence, predictions: Sequence) -> dict[str, float]:
        """All of :attr:`metric_names`, in percent."""

    def utterance_counts(self, references: Sequence, predictions: Sequence) -> dict[str, list[int]]:
        """Per test utterance, the counts whose summed ratio is the main metric (see
        :func:`tasks.metrics.utterance_counts`): ``{"numerator": [...], "denominator": [...]}``."""
        numerator, denominator = utterance_counts(self.main_metric, references, predictions)
        return {"numerator": numerator, "denominator": denominator}

    def is_better(self, new: float, old: float | None) -> bool:
        """Whether main-metric value ``new`` beats ``old`` (``None``: nothing yet)."""
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old


class CTCTask(Task):
    """Frame-level token recognition trained with CTC; token 0 is the blank."""

    level = "frame"
    BLANK = "<blank>"

    def __init__(self) -> None:
        self.vocabulary: list[str] = []
        self._index: dict[str, int] = {}

    @abc.abstractmethod
    def tokenize(self, reference: str) -> list[str]:
        """Split a reference into CTC tokens."""

    @abc.abstractmethod
    def detokenize(self, tokens: list[str]) -> str:
        """Join decoded tokens back into a reference string."""

    def fit_labels(self, references: Sequence[str]) -> None:
        tokens = sorted({token for ref in references for token in self.tokenize(ref)})
        if not tokens:
            raise ValueError(f"task {self.name!r}: the training references contain no tokens")
        self.vocabulary = [self.BLANK, *tokens]
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

    def label_state(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary}

    def encode(self, reference: str) -> torch.Tensor:
        unknown = [t for t in self.tokenize(reference) if t not in self._index]
        if unknown:
            raise ValueError(f"task {self.name!r}: tokens {sorted(set(unknown))} are not in the training vocabulary")
        return torch.tensor([self._index[t] for t in self.tokenize(reference)], dtype=torch.long)

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        """CTC loss of logits ``[B, T, V]``, averaged over target lengths then the batch."""
        log_probs = F.log_softmax(output.float(), dim=-1).transpose(0, 1)  # [T, B, V]
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        flat_targets = torch.cat(targets).to(device=output.device, dtype=torch.long)
        return F.ctc_loss(
            log_probs, flat_targets, lengths.cpu(), target_lengths, blank=0, reduction="mean", zero_infinity=True
        )

    def decode(self, output: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Greedy CTC decoding: best token per frame, repeats merged, blanks dropped."""
        best = output.argmax(dim=-1).cpu()
        predictions = []
        for path, length in zip(best, lengths.tolist(), strict=True):
            path = torch.unique_consecutive(path[:length])
            predictions.append(self.detokenize([self.vocabulary[i] for i in path.tolist() if i != 0]))
        return predictions


class ClassificationTask(Task):
    """Utterance-level classification with one softmax per slot (SID: one slot, SLU: three)."""

    level = "utterance"
    slots: ClassVar[tuple[str, ...]]
    pools_linearly = True  # SUPERB's MeanPoolingHead; a subclass with a non-linear head sets False

    def __init__(self) -> None:
        self.classes: list[list[str]] = []
        self._index: list[dict[str, int]] = []

    @property
    def num_classes(self) -> list[int]:
        return [len(c) for c in self.classes]

    def parse_label(self, cell: str) -> tuple[str, ...]:
        values = tuple(part.strip() for part in cell.split(SLU_SEPARATOR.strip()))
        if len(values) != len(self.slots):
            raise ValueError(
                f"task {self.name!r}: label {cell!r} has {len(values)} slots, expected {len(self.slots)} "
                f"({SLU_SEPARATOR.join(self.slots)})"
            )
        return values

    def fit_labels(self, references: Sequence[tuple[str, ...]]) -> None:
        if not references:
            raise ValueError(f"task {self.name!r}: no training references")
        self.classes = [sorted({ref[i] for ref in references}) for i in range(len(self.slots))]
        self._index = [{label: j for j, label in enumerate(c)} for c in self.classes]

    def label_state(self) -> dict[str, Any]:
        return {"classes": dict(zip(self.slots, self.classes, strict=True))}

    def encode(self, reference: tuple[str, ...]) -> torch.Tensor:
        return torch.tensor([index[label] for index, label in zip(self._index, reference, strict=True)])

    def split_logits(self, output: torch.Tensor) -> list[torch.Tensor]:
        """``[B, sum(classes)]`` -> one ``[B, classes_i]`` per slot."""
        return list(torch.split(output, self.num_classes, dim=-1))

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        """Sum over slots of the mean cross-entropy."""
        target = torch.stack(targets).to(output.device)  # [B, slots]
        return sum(F.cross_entropy(logits.float(), target[:, i]) for i, logits in enumerate(self.split_logits(output)))

    def decode(self, output: torch.Tensor, lengths: torch.Tensor) -> list[tuple[str, ...]]:
        best = [logits.argmax(dim=-1).tolist() for logits in self.split_logits(output)]
        return [tuple(self.classes[i][b[j]] for i, b in enumerate(best)) for j in range(output.shape[0])]


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``[B]`` lengths -> ``[B, max_length]`` bool mask, True on valid frames."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]
