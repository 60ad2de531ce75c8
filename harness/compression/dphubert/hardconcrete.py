"""HardConcrete gates (Louizos, Welling, Kingma 2018), as DPHuBERT uses them for structured pruning.

One gate module holds ``n`` units (the channels of a conv layer, the heads or FFN units of a layer,
or a single whole block). Each unit has a learned ``log_alpha``. With temperature ``beta = 2/3`` and
stretch interval ``(l, r) = (-0.1, 1.1)``:

- training (one sample per forward pass, shared across the batch)::

      u ~ U(eps, 1 - eps)
      s = sigmoid((log u - log(1 - u) + log_alpha) / beta)
      z = clamp(s * (r - l) + l, 0, 1)

- expected number of kept (non-zero) units, differentiable in ``log_alpha``::

      L0 = sum sigmoid(log_alpha - beta * log(-l / r))

- evaluation (deterministic): the ``round(n - L0)`` units with the smallest
  ``sigmoid(log_alpha / beta * 0.8)`` are set to 0; the others keep that soft value, which physical
  pruning later folds into the next layer's weights.

``log_alpha`` is initialised from ``N(log((1 - m) / m), 0.01)``: ``m = 0.01`` (almost surely kept) for
conv channels, heads and blocks, ``m = 0.5`` for FFN units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness.compression.dphubert.options import UNIT_KINDS
from upstreams.config import EncoderConfig, expected_num_params, mask_names

TEMPERATURE = 2.0 / 3.0
STRETCH_LEFT = -0.1
STRETCH_RIGHT = 1.1
EVAL_SHARPNESS = 0.8  # the eval score is sigmoid(log_alpha / beta * 0.8)


class HardConcrete(nn.Module):
    """A vector of ``n`` HardConcrete gates.

    Args:
        n: number of units (>= 1).
        init_mean: ``m`` in the initialisation ``log_alpha ~ N(log((1 - m) / m), init_std)``; roughly
            the initial probability that a unit is dropped. Must lie in (0, 1).
        init_std: standard deviation of the initialisation.
        temperature: ``beta``.
        stretch: ``(l, r)``, with ``l < 0`` and ``r > 1`` so that exact zeros and ones have mass.
        eps: keeps the uniform noise away from 0 and 1.
        generator: draws the training noise (a CPU generator; keep it to make runs resumable and
            to give every data-parallel process the same sample). None uses torch's global RNG.
    """

    def __init__(
        self,
        n: int,
        init_mean: float = 0.5,
        init_std: float = 0.01,
        temperature: float = TEMPERATURE,
        stretch: tuple[float, float] = (STRETCH_LEFT, STRETCH_RIGHT),
        eps: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"a HardConcrete gate needs n >= 1 units, got {n}")
        if not 0.0 < init_mean < 1.0:
            raise ValueError(f"init_mean must lie in (0, 1), got {init_mean}")
        left, right = stretch
        if not (left < 0.0 and right > 1.0):
            raise ValueError(f"stretch must be (l < 0, r > 1), got {stretch}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.n = n
        self.init_mean = init_mean
        self.init_std = init_std
        self.temperature = temperature
        self.left, self.right = left, right
        self.eps = eps
        self.generator = generator
        self.log_alpha = nn.Parameter(torch.empty(n))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        mean = math.log(1.0 - self.init_mean) - math.log(self.init_mean)
        self.log_alpha.normal_(mean, self.init_std, generator=self.generator)

    def l0_norm(self) -> Tensor:
        """Expected number of non-zero units (a differentiable scalar)."""
        shift = self.temperature * math.log(-self.left / self.right)
        return torch.sigmoid(self.log_alpha - shift).sum()

    def sample(self) -> Tensor:
        """One stochastic gate vector ``[n]`` in [0, 1] (differentiable in ``log_alpha``)."""
        noise = torch.rand(self.n, generator=self.generator, dtype=torch.float32)
        noise = noise.to(self.log_alpha.device).clamp(self.eps, 1.0 - self.eps)
        logits = (torch.log(noise) - torch.log1p(-noise) + self.log_alpha) / self.temperature
        stretched = torch.sigmoid(logits) * (self.right - self.left) + self.left
        return stretched.clamp(0.0, 1.0)

    def scores(self) -> Tensor:
        """Eval-time soft values ``sigmoid(log_alpha / beta * 0.8)`` ``[n]`` (also the pruning order)."""
        return torch.sigmoid(self.log_alpha / self.temperature * EVAL_SHARPNESS)

    def num_zeros(self) -> int:
        """How many units the eval rule sets to zero: ``round(n - L0)``, within [0, n]."""
        return min(self.n, max(0, round(self.n - float(self.l0_norm().detach()))))

    @torch.no_grad()
    def deterministic(self) -> Tensor:
        """The eval gate vector ``[n]``: soft scores, with the ``round(n - L0)`` smallest set to zero."""
        values = self.scores().clone()
        zeros = self.num_zeros()
        if zeros:
            values[torch.topk(values, zeros, largest=False).indices] = 0.0
        return values

    def forward(self) -> Tensor:
        """A sample in training mode, the deterministic gates in eval mode; ``[n]``."""
        return self.sample() if self.training else self.deterministic()

    def extra_repr(self) -> str:
        return f"n={self.n}, init_mean={self.init_mean}, temperature={self.temperature:.4g}"


# ---------------------------------------------------------------------- gates over a whole encoder
BLOCK_KINDS = ("attention", "ffn")


def _kind(name: str) -> str:
    """``conv.3.channels`` -> conv, ``layer.2.heads`` -> heads, ``layer.2.ffn`` -> ffn, ``layer.2`` -> layer."""
    if name.startswith("conv."):
        return "conv"
    parts = name.split(".", 2)
    return parts[2] if len(parts) == 3 else "layer"


class EncoderGates(nn.Module):
    """One :class:`HardConcrete` per prunable structure of a :class:`~upstreams.model.SpeechEncoder`.

    Gate names are the encoder's mask names (``upstreams.config.mask_names``): ``conv.{i}.channels``,
    ``layer.{l}.heads``, ``layer.{l}.ffn_units`` and, with ``blocks=True``, the whole-block gates
    ``layer.{l}.attention`` / ``layer.{l}.ffn`` (one unit each).

    Args:
        config: the (unpruned) encoder's architecture.
        prune: which unit kinds get gates, a subset of ``("conv", "heads", "ffn_units")``.
        blocks: also gate whole attention and FFN blocks.
        generator: CPU generator for initialisation and training noise (see :class:`HardConcrete`).
    """

    def __init__(
        self,
        config: EncoderConfig,
        prune: tuple[str, ...] = UNIT_KINDS,
        blocks: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(prune) - set(UNIT_KINDS))
        if unknown:
            raise ValueError(f"unknown prunable structures {unknown}; choose from {', '.join(UNIT_KINDS)}")
        self.config = config
        self.names: list[str] = []
        gates = {}
        for name, shape in mask_names(config).items():
            kind = _kind(name)
            if kind in prune or (blocks and kind in BLOCK_KINDS):
                n = shape[0] if shape else 1
                init_mean = 0.5 if kind == "ffn_units" else 0.01
                gates[name.replace(".", "_")] = HardConcrete(n, init_mean=init_mean, generator=generator)
                self.names.append(name)
        if not gates:
            raise ValueError("nothing to prune: no structure of the chosen kinds exists in this encoder")
        self.gates = nn.ModuleDict(gates)

    def gate(self, name: str) -> HardConcrete:
        return self.gates[name.replace(".", "_")]

    def _shaped(self, name: str, value: Tensor) -> Tensor:
        return value.reshape(()) if _kind(name) in BLOCK_KINDS else value

    def masks(self) -> dict[str, Tensor]:
        """Masks for ``SpeechEncoder.set_masks``: samples in training mode, the eval rule otherwise
        (see :meth:`deterministic_masks`)."""
        if not self.training:
            return self.deterministic_masks()
        return {name: self._shaped(name, self.gate(name).sample()) for name in self.names}

    def expected_kept(self) -> dict[str, Tensor]:
        """Expected kept units (block gates: keep probability) per gate; differentiable."""
        return {name: self.gate(name).l0_norm() for name in self.names}

    def expected_num_params(self) -> Tensor:
        """DPHuBERT's differentiable size estimate: ``upstreams.config.expected_num_params`` with
        every gated structure replaced by its expected kept amount."""
        return expected_num_params(self.config, self.expected_kept())

    @torch.no_grad()
    def deterministic_masks(self) -> dict[str, Tensor]:
        """The eval rule for every gate; a conv layer always keeps at least its best channel."""
        masks = {}
        for name in self.names:
            gate = self.gate(name)
            values = gate.deterministic()
            if _kind(name) == "conv" and not bool(values.any()):
                best = int(gate.scores().argmax())
                values[best] = gate.scores()[best]
            masks[name] = self._shaped(name, values)
        return masks

    def num_params(self, masks: dict[str, Tensor]) -> int:
        """Exact parameter count of the model that ``prune()`` makes from ``masks`` (non-zero = kept)."""
        return int(expected_num_params(self.config, _counts(masks)))

    @torch.no_grad()
    def project_to_budget(self, masks: dict[str, Tensor], budget: int) -> tuple[dict[str, Tensor], dict]:
        """Move ``masks`` to at most ``budget`` parameters, as close below it as single units allow.

        1. While over budget, zero the kept unit with the lowest eval score (a conv layer keeps one
           channel; whole-block gates are left as they are).
        2. Then, in decreasing score order, give back pruned units whose cost still fits the budget
           (a given-back unit gets its eval score as its value).
        The result lies within the cost of one unit (an FFN unit: ``2 D + 1`` parameters) of the
        budget whenever some unit that small is pruned. Returns the new masks and a summary.
        """
        masks = {name: value.detach().clone() for name, value in masks.items()}
        before = self.num_params(masks)
        dead = {  # units inside a removed block cost nothing and are left alone
            name
            for name in self.names
            if _kind(name) in ("heads", "ffn_units")
            and float(masks.get(name.rsplit(".", 1)[0] + (".attention" if _kind(name) == "heads" else ".ffn"), 1.0)) == 0.0
        }
        unit_names = [n for n in self.names if _kind(n) in UNIT_KINDS and n not in dead]
        counts = _counts({n: masks[n] for n in unit_names})
        fixed = {n: v for n, v in _counts(masks).items() if n not in counts}
        cost_cache: dict[str, int] = {}

        def cost(name: str) -> int:  # parameters that one more unit of `name` adds
            if _kind(name) != "conv" and name in cost_cache:
                return cost_cache[name]
            base = {**fixed, **counts}
            value = int(expected_num_params(self.config, {**base, name: counts[name] + 1})) - int(
                expected_num_params(self.config, base)
            )
            cost_cache[name] = value
            return value

        scores = {n: self.gate(n).scores() for n in unit_names}
        params, removed, added = before, 0, 0
        if params > budget:
            kept = [(float(scores[n][i]), n, i) for n in unit_names for i in torch.nonzero(masks[n]).flatten().tolist()]
            for _, name, i in sorted(kept):
                if params <= budget:
                    break
                if _kind(name) == "conv" and counts[name] == 1:
                    continue
                counts[name] -= 1
                params -= cost(name)
                masks[name][i] = 0.0
                removed += 1
        pruned = [(float(scores[n][i]), n, i) for n in unit_names for i in torch.nonzero(masks[n] == 0).flatten().tolist()]
        for _, name, i in sorted(pruned, reverse=True):
            extra = cost(name)
            if params + extra <= budget:
                counts[name] += 1
                params += extra
                masks[name][i] = scores[name][i]
                added += 1
        after = self.num_params(masks)
        return masks, {"params_before": before, "params_after": after, "budget": budget,
                       "units_removed": removed, "units_added": added}  # fmt: skip


def _counts(masks: dict[str, Tensor]) -> dict[str, int]:
    """Kept units per mask (non-zero entries); scalar block masks count as 0 or 1."""
    return {name: int(torch.count_nonzero(value)) for name, value in masks.items()}
