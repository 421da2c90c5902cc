"""Writing generator checkpoints in the reference containers (for tests: tiny random weights in the real
formats and key names)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from deepforcing.checkpoints import (
    ARCH_FIELDS,
    CONFIG_NAME,
    DIFFUSERS_CONFIG_KEYS,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_NAME,
    wan_to_diffusers,
)
from deepforcing.errors import WeightsError
from deepforcing.model import ModelConfig

# Writing (tests, conversions)


def save_state_dict(
    sd: Mapping[str, torch.Tensor],
    path: str | Path,
    key: str | None = None,
    prefix: str = "",
    extra: Mapping | None = None,
) -> Path:
    """Write ``sd`` (names prefixed by ``prefix``) as ``.safetensors`` (flat) or a torch file.

    For torch files ``key`` nests the dict (``{"generator_ema": {...}}``) and ``extra`` adds further
    top-level entries (e.g. ``{"critic": {...}, "step": 10}``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    named = {prefix + k: v.detach().contiguous() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        if key is not None or extra:
            raise WeightsError("safetensors files are flat: key= and extra= are for torch files")
        from safetensors.torch import save_file

        save_file(named, str(path))
    else:
        torch.save({**(extra or {}), key: named} if key is not None else {**named, **(extra or {})}, str(path))
    return path


def save_model_folder(
    sd: Mapping[str, torch.Tensor],
    folder: str | Path,
    cfg: ModelConfig,
    shards: int = 1,
    names: Literal["wan", "diffusers"] = "wan",
) -> Path:
    """Write a Wan-style model folder: ``config.json`` + ``diffusion_pytorch_model.safetensors``.

    ``shards > 1`` splits the tensors over ``diffusion_pytorch_model-0000i-of-0000n.safetensors`` with
    an ``.index.json``. ``names="diffusers"`` writes diffusers parameter names and a diffusers config.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if names == "diffusers":
        sd = {wan_to_diffusers(k): v for k, v in sd.items()}
        conf = {"_class_name": "WanTransformer3DModel", **{theirs: getattr(cfg, ours)
                for ours, theirs in DIFFUSERS_CONFIG_KEYS.items()}, "attention_head_dim": cfg.head_dim}
    else:
        conf = {"_class_name": "WanModel", "model_type": "t2v", **{k: getattr(cfg, k) for k in ARCH_FIELDS}}
    (folder / CONFIG_NAME).write_text(json.dumps(conf, indent=2))
    tensors = {k: v.detach().contiguous() for k, v in sd.items()}
    if shards <= 1:
        save_file(tensors, str(folder / SAFETENSORS_NAME))
        return folder
    keys = list(tensors)
    per = -(-len(keys) // shards)
    stem = SAFETENSORS_NAME.removesuffix(".safetensors")
    weight_map = {}
    for i in range(shards):
        part = keys[i * per:(i + 1) * per]
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / SAFETENSORS_INDEX_NAME).write_text(json.dumps(index, indent=2))
    return folder
