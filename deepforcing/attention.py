"""Attention kernels and query-key importance scores.

``attend`` runs softmax attention through flash-attn when it is installed and usable (CUDA,
fp16/bf16), else PyTorch SDPA. ``key_importance`` scores cached keys by the queries that attend to
them without materialising a full attention matrix: with ``mode="dot"`` it uses the identity
``sum_q (q . k) = (sum_q q) . k``; with ``mode="softmax"`` it walks query blocks so only one
``[B, H, block, keys]`` slab exists at a time.
"""

from __future__ import annotations

import torch

from deepforcing.errors import ConfigError
from deepforcing.model import sdpa

try:  # optional fast kernel
    from flash_attn import flash_attn_func  # type: ignore
except Exception:  # pragma: no cover - not installed on CPU machines
    flash_attn_func = None

BACKENDS = ("auto", "sdpa", "flash")


def resolve_backend(backend: str, dtype: torch.dtype, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    usable = flash_attn_func is not None and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    if backend == "flash" and not usable:
        raise ConfigError("attention backend 'flash' needs flash-attn installed, a CUDA device and fp16/bf16 weights")
    if backend == "auto":
        return "flash" if usable else "sdpa"
    return backend


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Unmasked softmax attention, ``[B, L, H, D]`` layout, scale 1/sqrt(D)."""
    if backend == "flash":
        return flash_attn_func(q, k, v)
    return sdpa(q, k, v)


def key_importance(
    q: torch.Tensor,
    k: torch.Tensor,
    mode: str = "dot",
    fuse: str = "sum",
    heads: str = "sum",
    extra_keys: torch.Tensor | None = None,
    block: int = 1024,
) -> torch.Tensor:
    """Importance of each key in ``k [B, N, H, D]`` to the queries ``q [B, M, H, D]`` (both rotated).

    - ``mode="dot"``: raw logits ``q.k`` (no scale), fused over queries by ``fuse`` (``sum``/``max``).
    - ``mode="softmax"``: attention probabilities, normalised over ``k`` plus ``extra_keys``
      (keys the queries also attend to but that are not being scored), fused by ``fuse``.
    ``heads="sum"`` returns ``[B, N]`` summed over heads; ``heads="none"`` returns ``[B, H, N]``.
    Computed in float32.
    """
    if mode not in ("dot", "softmax") or fuse not in ("sum", "max") or heads not in ("sum", "none"):
        raise ConfigError(f"key_importance: bad mode/fuse/heads {mode!r}/{fuse!r}/{heads!r}")
    qf, kf = q.float(), k.float()
    if mode == "dot" and fuse == "sum":
        out = torch.einsum("bhd,bnhd->bhn", qf.sum(dim=1), kf)
    else:
        scale = q.shape[-1] ** -0.5
        kt = kf.permute(0, 2, 3, 1)  # [B, H, D, N]
        et = extra_keys.float().permute(0, 2, 3, 1) if extra_keys is not None else None
        acc = None
        for s in range(0, q.shape[1], block):
            qb = qf[:, s : s + block].transpose(1, 2)  # [B, H, m, D]
            logits = qb @ kt  # [B, H, m, N]
            if mode == "softmax":
                full = logits * scale
                if et is not None:
                    lse = torch.logsumexp(torch.cat([full, (qb @ et) * scale], dim=-1), dim=-1, keepdim=True)
                else:
                    lse = torch.logsumexp(full, dim=-1, keepdim=True)
                logits = (full - lse).exp()
            part = logits.sum(dim=2) if fuse == "sum" else logits.amax(dim=2)
            acc = part if acc is None else (acc + part if fuse == "sum" else torch.maximum(acc, part))
        out = acc
    return out.sum(dim=1) if heads == "sum" else out
