"""LoRA weights on a generator (LongLive ``lora.pt``, PEFT names).

LoRA (LongLive ``lora.pt``, PEFT names): :func:`read_lora`, then either :func:`merge_lora`
(W += (alpha/r)·B·A, in float32, cast back) or :func:`apply_lora_unmerged`, which wraps each target
``nn.Linear`` so the forward computes ``base(x) + (alpha/r)·B(A(x))`` as PEFT does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from deepforcing.checkpoints import (
    _LORA_RE,
    LORA_CONTAINER_KEY,
    LazyStateDict,
    _describe_top,
    _fmt_shape,
    _listing,
    _safetensors_entries,
    normalize_key,
    torch_load,
)
from deepforcing.errors import WeightsError

# LoRA


LoraWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]


def read_lora(path: str | Path, key: str | None = None) -> LoraWeights:
    """``{module path: (A [r, in], B [out, r])}`` from a PEFT LoRA state dict.

    Accepts LongLive's ``lora.pt`` container (``generator_lora``; ``key`` picks another entry) or a
    raw PEFT dict. Keys ``base_model.model.<module>.lora_{A|B}(.default)?.weight``; module paths are
    normalised like state-dict keys.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: no such LoRA file")
    if path.suffix == ".safetensors":
        container: Mapping = LazyStateDict(_safetensors_entries(path))
    else:
        container = torch_load(path)
    if not isinstance(container, Mapping):
        raise WeightsError(f"{path}: expected a dict, found {type(container).__name__}")
    if key is not None or LORA_CONTAINER_KEY in container:
        k = key or LORA_CONTAINER_KEY
        if not isinstance(container.get(k), Mapping):
            raise WeightsError(f"{path}: no LoRA state dict under {k!r}; top-level keys: {_describe_top(container)}")
        container = container[k]
    halves: dict[str, dict[str, torch.Tensor]] = {}
    bad = []
    for name in container:
        m = _LORA_RE.match(name)
        if not m:
            bad.append(name)
            continue
        halves.setdefault(normalize_key(m[1]), {})[m[2]] = container[name]
    if bad or not halves:
        raise WeightsError(
            f"{path}: not a PEFT LoRA state dict: {len(bad)} key(s) are not '<module>.lora_A/B[.default].weight' "
            f"({_listing(bad)}). Expected LongLive's lora.pt ({LORA_CONTAINER_KEY!r}) or a raw PEFT dict."
        )
    lora: LoraWeights = {}
    problems = []
    for module, ab in halves.items():
        if set(ab) != {"A", "B"}:
            problems.append(f"{module}: has lora_{''.join(ab)} only")
            continue
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            problems.append(f"{module}: A {_fmt_shape(a.shape)} and B {_fmt_shape(b.shape)} disagree on the rank")
            continue
        lora[module] = (a, b)
    if problems:
        raise WeightsError(f"{path}: malformed LoRA: {_listing(problems)}")
    return lora


def lora_ranks(lora: LoraWeights) -> tuple[int, ...]:
    """The distinct ranks r (rows of A) of a LoRA's modules (LongLive: one rank, 256)."""
    return tuple(sorted({a.shape[0] for a, _ in lora.values()}))


def check_lora(model: nn.Module, lora: LoraWeights, source: str = "LoRA") -> None:
    """Raise ONE WeightsError if any LoRA target is not a Linear of the model or has other sizes."""
    modules = dict(model.named_modules())
    problems = []
    for name, (a, b) in lora.items():
        target = modules.get(name)
        if isinstance(target, LoRALinear):
            problems.append(f"{name}: already carries an unmerged LoRA")
            continue
        if not isinstance(target, nn.Linear):
            problems.append(f"{name}: {'no such module' if target is None else type(target).__name__ + ', not Linear'}")
            continue
        if a.shape[1] != target.in_features or b.shape[0] != target.out_features:
            problems.append(
                f"{name}: A {_fmt_shape(a.shape)}, B {_fmt_shape(b.shape)} do not fit Linear("
                f"{target.in_features} -> {target.out_features})"
            )
    if problems:
        raise WeightsError(
            f"{source}: {len(problems)} of {len(lora)} LoRA modules do not fit the model: {_listing(problems)}. "
            "Is this the LoRA of another base model?"
        )


def _scale(a: torch.Tensor, alpha: float | None) -> float:
    rank = a.shape[0]
    return (rank if alpha is None else alpha) / rank


@torch.no_grad()
def merge_lora(model: nn.Module, lora: LoraWeights, alpha: float | None = None) -> None:
    """W += (alpha/r)·B·A for every target, computed in float32 and cast back to W's dtype.

    ``alpha`` defaults to the rank (scale 1, as LongLive's r = alpha = 256).
    """
    check_lora(model, lora)
    modules = dict(model.named_modules())
    for name, (a, b) in lora.items():
        w = modules[name].weight
        delta = b.to(w.device, torch.float32) @ a.to(w.device, torch.float32)
        w.copy_((w.float() + _scale(a, alpha) * delta).to(w.dtype))


class LoRALinear(nn.Module):
    """``base(x) + scale · B(A(x))``, PEFT's unmerged LoRA forward (no dropout at inference)."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, scale: float):
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = base.in_features, base.out_features
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_A = nn.Linear(base.in_features, a.shape[0], bias=False, dtype=dtype, device=device)
        self.lora_B = nn.Linear(a.shape[0], base.out_features, bias=False, dtype=dtype, device=device)
        with torch.no_grad():
            self.lora_A.weight.copy_(a)
            self.lora_B.weight.copy_(b)
        self.scale = scale

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        return (out + self.lora_B(self.lora_A(x.to(self.lora_A.weight.dtype))) * self.scale).to(out.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.lora_A.out_features}, scale={self.scale}"


def apply_lora_unmerged(model: nn.Module, lora: LoraWeights, alpha: float | None = None) -> None:
    """Replace every target ``nn.Linear`` by a :class:`LoRALinear` (exact PEFT-style forward).

    The model's state dict then has ``<module>.base_layer.weight`` and ``<module>.lora_{A,B}.weight``.
    """
    check_lora(model, lora)
    for name, (a, b) in lora.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), a, b, _scale(a, alpha)))


# ----------------------------------------------------------------------------------------------


def unwrap_lora_keys(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with unmerged LoRA layers shown as their base weights (for comparisons)."""
    return {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
