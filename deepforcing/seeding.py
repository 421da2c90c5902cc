"""Seeds derived from names: one generator per (seed, parts...) tuple, independent of call order."""

from __future__ import annotations

import hashlib

import torch


def hashed_seed(*parts: object) -> int:
    """A 63-bit seed from the text of ``parts`` (sha256), the same on every machine and run."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def hashed_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(hashed_seed(*parts))
