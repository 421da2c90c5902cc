"""Loading a generator into :class:`~deepforcing.model.CausalWan`: checkpoint (strict), config, LoRA.

Containers and key names: :mod:`deepforcing.checkpoints`; LoRA: :mod:`deepforcing.lora`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from deepforcing.checkpoints import (
    CONFIG_NAME,
    DIFFUSERS_SUBFOLDER,
    Kind,
    _read,
    check_config,
    check_state_dict,
    looks_like_diffusers,
    model_config,
    normalize_key,
    normalize_keys,
    read_config,
)
from deepforcing.errors import WeightsError
from deepforcing.lora import apply_lora_unmerged, check_lora, lora_ranks, merge_lora, read_lora
from deepforcing.model import CausalWan

# Loading


@dataclass
class LoadReport:
    """What :func:`load_generator` read and how."""

    path: str
    kind: str
    key: str | None
    num_tensors: int
    num_params: int
    source_dtypes: tuple[str, ...]
    model_dtype: str
    diffusers_names: bool = False
    lora_path: str | None = None
    lora_modules: int = 0
    lora_ranks: tuple[int, ...] = ()
    lora_alpha: float | None = None
    lora_mode: str | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        src = self.path + (f" [{self.key}]" if self.key else "")
        text = (f"loaded {self.num_tensors} tensors ({self.num_params:,} parameters) from {src} as {self.kind}; "
                f"{'/'.join(self.source_dtypes)} -> {self.model_dtype}"
                + (" (diffusers names mapped)" if self.diffusers_names else ""))
        if self.lora_path:
            text += (f"; LoRA {self.lora_path}: {self.lora_modules} modules, r={'/'.join(map(str, self.lora_ranks))}, "
                     f"alpha={'r' if self.lora_alpha is None else self.lora_alpha}, {self.lora_mode}")
        return text


def _config_next_to(path: Path) -> Path | None:
    """The config.json of a model folder or of a safetensors file's folder, if there is one."""
    if path.is_dir():
        candidates = [path / CONFIG_NAME, path / DIFFUSERS_SUBFOLDER / CONFIG_NAME]
    elif path.suffix == ".safetensors" or path.name.endswith(".index.json"):
        candidates = [path.parent / CONFIG_NAME]
    else:
        candidates = []
    return next((c for c in candidates if c.is_file()), None)


@torch.no_grad()
def load_generator(
    model: CausalWan,
    path: str | Path,
    kind: Kind = "auto",
    key: str | None = None,
    lora: str | Path | None = None,
    lora_mode: Literal["merged", "unmerged"] = "merged",
    lora_alpha: float | None = None,
    lora_key: str | None = None,
) -> LoadReport:
    """Load a generator checkpoint into ``model`` strictly, then optionally a LoRA.

    Everything (config.json, key names, shapes, LoRA targets) is checked before the first parameter
    is written: a failing load leaves the model untouched. Tensors are cast to the model's dtype.
    """
    if lora_mode not in ("merged", "unmerged"):
        raise WeightsError(f"lora_mode must be 'merged' or 'unmerged', not {lora_mode!r}")
    path = Path(path).expanduser()
    raw, used_key = _read(path, key, kind)
    diffusers = looks_like_diffusers(normalize_key(k) for k in raw)
    sd = normalize_keys(raw)
    source = f"{path}" + (f" [{used_key}]" if used_key else "")
    config_file = _config_next_to(path)
    if config_file is not None:
        check_config(model.cfg, read_config(config_file), str(config_file))
    check_state_dict(model, sd, source)
    lora_weights = None
    if lora is not None:
        lora_weights = read_lora(lora, key=lora_key)
        check_lora(model, lora_weights, str(lora))

    params = model.state_dict()
    dtypes = set()
    for name, target in params.items():
        tensor = sd[name]
        dtypes.add(str(tensor.dtype).removeprefix("torch."))
        target.copy_(tensor)
        del tensor
    report = LoadReport(
        path=str(path), kind=kind, key=used_key, num_tensors=len(params),
        num_params=sum(p.numel() for p in params.values()), source_dtypes=tuple(sorted(dtypes)),
        model_dtype=str(model.dtype).removeprefix("torch."), diffusers_names=diffusers,
    )
    if lora_weights is not None:
        (merge_lora if lora_mode == "merged" else apply_lora_unmerged)(model, lora_weights, lora_alpha)
        report.lora_path, report.lora_modules = str(lora), len(lora_weights)
        report.lora_ranks, report.lora_alpha, report.lora_mode = lora_ranks(lora_weights), lora_alpha, lora_mode
    return report


def build_generator(
    kind: str,
    weights=None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    lora_mode: Literal["merged", "unmerged"] = "merged",
    lora_alpha: float | None = None,
    seed: int = 0,
) -> tuple[CausalWan, LoadReport | None]:
    """The generator of model ``kind`` (see :mod:`deepforcing.model_files`), built from its config.json.

    Its files are checked first (one WeightsError naming everything missing). The model is created
    on the meta device and materialised directly in ``dtype`` on ``device``, so the only full copy
    is the loaded one. ``kind="tiny"`` returns the random tiny model (``seed``) and no report.
    """
    from deepforcing.model import random_init_, tiny
    from deepforcing.model_files import WeightsConfig

    if kind == "tiny":
        return random_init_(CausalWan(tiny()), seed).to(device=device, dtype=dtype).eval(), None
    weights = weights or WeightsConfig()
    files = weights.check(kind, components=("generator",))
    with torch.device("meta"):
        model = CausalWan(model_config(files["wan.config"]))
    persistent = set(model.state_dict())
    transient = [n for n, _ in model.named_buffers() if n not in persistent]
    if transient:  # a buffer the checkpoint does not restore would stay uninitialised on to_empty
        raise WeightsError(f"cannot materialise from meta: non-persistent buffers {transient}")
    model = model.to(dtype).to_empty(device=device)
    lora = weights.lora(kind)
    report = load_generator(
        model, weights.generator(kind), kind=kind, lora=lora, lora_mode=lora_mode, lora_alpha=lora_alpha
    )
    return model.eval(), report


# ----------------------------------------------------------------------------------------------
