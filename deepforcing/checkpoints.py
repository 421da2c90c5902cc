"""Reading generator checkpoints: containers, key names, strict checks, config.json.

Containers (``docs/reference_engines.md`` §8.2):

==================  ======================================================  =============================
kind                file                                                    state dict
==================  ======================================================  =============================
``wan``             ``Wan2.1-T2V-1.3B/`` folder: ``config.json`` +          flat, original Wan names
                    ``diffusion_pytorch_model.safetensors`` (or sharded
                    ``...safetensors.index.json``)
``diffusers``       ``transformer/`` folder of ``...-Diffusers``            flat, diffusers names (§8.4)
``self_forcing``    ``self_forcing_dmd.pt``                                 ``generator_ema`` / ``generator``
``rolling_forcing`` ``rolling_forcing_dmd.pt``                              ``generator_ema`` / ``generator``
``longlive``        ``longlive_base.pt`` (+ ``lora.pt``)                    ``generator`` / ``generator_ema`` /
                                                                            ``model``
``causvid``         ``autoregressive_checkpoint/model.pt``                  ``generator``
``causal_forcing``  ``chunkwise/causal_forcing.pt``                         ``generator``
==================  ======================================================  =============================

Every key is normalised (:func:`normalize_keys`): wrapper segments (``_fsdp_wrapped_module.``,
``_checkpoint_wrapped_module.``, ``_orig_mod.``) are removed wherever they occur, leading ``module.``
and ``model.`` prefixes are stripped, and diffusers names are mapped back to Wan's. The load is
strict: every problem (missing, unexpected or mis-shaped keys) is reported in ONE
:class:`~deepforcing.errors.WeightsError`, raised before the model is touched.

Memory: ``.pt`` files are opened with ``torch.load(mmap=True, weights_only=True)`` and safetensors
lazily, one tensor at a time, so the only full copy in memory is the model's own (in its dtype).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from deepforcing.errors import WeightsError
from deepforcing.model import ModelConfig

# ----------------------------------------------------------------------------------------------
# Checkpoint kinds

Kind = Literal["auto", "wan", "diffusers", "self_forcing", "rolling_forcing", "longlive", "causvid", "causal_forcing"]

# Sub-dict keys each engine's own inference code accepts, in order of preference. An empty tuple
# means the file is a flat state dict.
GENERATOR_KEYS: dict[str, tuple[str, ...]] = {
    "wan": (),
    "diffusers": (),
    "self_forcing": ("generator_ema", "generator"),
    "rolling_forcing": ("generator_ema", "generator"),
    "longlive": ("generator", "generator_ema", "model"),
    "causvid": ("generator",),
    "causal_forcing": ("generator",),
}
# ``kind="auto"``: the first of these present wins (EMA first, as Self-Forcing's README runs it);
# a flat state dict is taken as it is.
AUTO_KEYS = ("generator_ema", "generator", "model")
LORA_CONTAINER_KEY = "generator_lora"

# Wrapper segments removed wherever they occur, and prefixes stripped from the front (§8.2).
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
LEADING_PREFIXES = ("module.", "model.")

# Lists in error messages show this many entries, then "... and N more".
MAX_LISTED = 12
#: PEFT LoRA names (LongLive lora.pt): recognised here so a LoRA file given as a checkpoint is named as one
_LORA_RE = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_(A|B)(?:\.default)?\.weight$")

SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
SAFETENSORS_INDEX_NAME = SAFETENSORS_NAME + ".index.json"
CONFIG_NAME = "config.json"
DIFFUSERS_SUBFOLDER = "transformer"


# ----------------------------------------------------------------------------------------------
# Lazily read state dicts


class LazyStateDict(Mapping[str, torch.Tensor]):
    """A read-only state dict whose tensors are read on access; names and shapes are known up front.

    Used for safetensors files so that a strict check needs no tensor data and a load holds at most
    one source tensor at a time.
    """

    def __init__(self, entries: dict[str, tuple[Callable[[], torch.Tensor], tuple[int, ...]]]):
        self._entries = entries

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._entries[key][0]()

    def __contains__(self, key: object) -> bool:  # Mapping's default would read the tensor
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def renamed(self, new_to_old: dict[str, str]) -> LazyStateDict:
        return LazyStateDict({new: self._entries[old] for new, old in new_to_old.items()})


StateDict = Mapping[str, torch.Tensor]


def tensor_shape(sd: StateDict, key: str) -> tuple[int, ...]:
    """Shape of ``sd[key]`` without reading its data when ``sd`` is lazy."""
    return sd.shape(key) if isinstance(sd, LazyStateDict) else tuple(sd[key].shape)


def _safetensors_entries(path: Path, names: list[str] | None = None) -> dict:
    from safetensors import safe_open

    def getter(key: str) -> Callable[[], torch.Tensor]:
        def get() -> torch.Tensor:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(key)

        return get

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys()) if names is None else names
            available = set(f.keys())
            absent = [k for k in keys if k not in available]
            if absent:
                raise WeightsError(
                    f"{path}: the shard index names {len(absent)} tensor(s) this shard does not hold "
                    f"({_listing(absent)}); the download is incomplete or the index belongs to another model"
                )
            return {k: (getter(k), tuple(f.get_slice(k).get_shape())) for k in keys}
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the file and what was expected
        raise WeightsError(f"{path}: cannot be read as safetensors ({e}); re-download the file") from e


def _read_sharded(index_path: Path) -> LazyStateDict:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"{index_path}: not a safetensors shard index with a 'weight_map' ({e})") from e
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    missing = [s for s in by_shard if not (index_path.parent / s).is_file()]
    if missing:
        raise WeightsError(
            f"{index_path}: {len(missing)} shard file(s) named in the index are missing next to it: "
            f"{_listing(missing)}. Download every shard into {index_path.parent}."
        )
    entries: dict = {}
    for shard, names in by_shard.items():
        entries.update(_safetensors_entries(index_path.parent / shard, names))
    return LazyStateDict(entries)


def torch_load(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({e})") from e
    except Exception as e:  # noqa: BLE001 - re-raised with what to do
        raise WeightsError(
            f"{path}: cannot be read as a torch checkpoint with weights_only=True ({type(e).__name__}: {e}). "
            "Expected a torch .pt/.pth of tensors (e.g. self_forcing_dmd.pt): check that the download is complete; "
            "a checkpoint that also pickles other Python objects must be re-saved as a plain state dict."
        ) from e
    # Legacy (non-zip) serialisation cannot be memory-mapped; read it normally.
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from e


def _is_flat(d: Mapping) -> bool:
    return len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def _describe_top(d: Mapping) -> str:
    parts = []
    for k, v in list(d.items())[:MAX_LISTED]:
        what = "tensor" if isinstance(v, torch.Tensor) else ("dict" if isinstance(v, Mapping) else type(v).__name__)
        parts.append(f"{k!r} ({what})")
    more = f", ... and {len(d) - MAX_LISTED} more" if len(d) > MAX_LISTED else ""
    return ", ".join(parts) + more


def _looks_like_lora(d: Mapping) -> bool:
    return any(isinstance(k, str) and _LORA_RE.match(k) for k in d)


def select_generator(container: Mapping, path: Path | str, kind: str = "auto", key: str | None = None) -> tuple:
    """Pick the generator state dict out of a loaded container; returns ``(state_dict, key or None)``."""
    if not isinstance(container, Mapping):
        raise WeightsError(f"{path}: expected a dict of tensors or of state dicts, found {type(container).__name__}")
    if key is not None:
        if key not in container or not isinstance(container[key], Mapping):
            raise WeightsError(
                f"{path}: has no state dict under key {key!r}; its top-level keys are {_describe_top(container)}"
            )
        return container[key], key
    wanted = AUTO_KEYS if kind == "auto" else GENERATOR_KEYS[kind]
    for k in wanted:
        if isinstance(container.get(k), Mapping):
            return container[k], k
    if (kind == "auto" or not wanted) and _is_flat(container):
        return container, None
    if LORA_CONTAINER_KEY in container or _looks_like_lora(container):
        hint = " It is a LoRA file: pass it as lora=... together with the base checkpoint."
    elif wanted:
        hint = f" A {kind} checkpoint holds its generator under {' or '.join(map(repr, wanted))}."
    else:
        hint = " A flat state dict of tensors was expected."
    raise WeightsError(
        f"{path}: no generator state dict found (kind={kind!r}); top-level keys are {_describe_top(container)}."
        f"{hint} Pass key=... to choose a sub-dict explicitly, or check that this is the generator checkpoint."
    )


def read_state_dict(path: str | Path, key: str | None = None, kind: str = "auto") -> StateDict:
    """The raw (un-normalised) generator state dict stored at ``path``.

    ``path`` may be a ``.safetensors`` file, a shard index ``*.safetensors.index.json``, a torch
    ``.pt``/``.pth``/``.bin`` (a flat state dict or a container such as ``{"generator_ema": ...}``),
    or a folder holding ``diffusion_pytorch_model.safetensors`` / its index (a diffusers root with a
    ``transformer/`` subfolder also works). ``key`` names the sub-dict of a container; by default the
    ``kind``'s accepted keys are tried (see :data:`GENERATOR_KEYS`). Safetensors come back lazy.
    """
    return _read(Path(path).expanduser(), key, kind)[0]


def _read(path: Path, key: str | None, kind: str) -> tuple[StateDict, str | None]:
    if kind != "auto" and kind not in GENERATOR_KEYS:
        raise WeightsError(f"unknown checkpoint kind {kind!r}; known kinds: auto, {', '.join(GENERATOR_KEYS)}")
    if path.is_dir():
        path = _weights_in_folder(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.name.endswith(".index.json"):
        return _read_sharded(path), None
    if path.suffix == ".safetensors":
        return LazyStateDict(_safetensors_entries(path)), None
    return select_generator(torch_load(path), path, kind, key)


def _weights_in_folder(folder: Path) -> Path:
    for base in (folder, folder / DIFFUSERS_SUBFOLDER):
        for name in (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME):
            if (base / name).is_file():
                return base / name
    raise WeightsError(
        f"{folder}: a model folder must hold {SAFETENSORS_NAME} or {SAFETENSORS_INDEX_NAME} (with its shards), "
        f"directly or in {DIFFUSERS_SUBFOLDER}/; found {sorted(p.name for p in folder.iterdir())[:MAX_LISTED]}"
    )


# ----------------------------------------------------------------------------------------------
# Key normalisation and the diffusers name map

# Original Wan module path <-> diffusers module path (§8.4), outside the blocks ...
DIFFUSERS_TOP_MODULES = {
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
}
DIFFUSERS_TOP_PARAMS = {"head.modulation": "scale_shift_table"}
# ... and inside ``blocks.{i}``. Diffusers' ``norm2`` is Wan's ``norm3`` (the affine cross-attention norm).
DIFFUSERS_BLOCK_MODULES = {
    **{f"{ours}.{p}": f"{theirs}.to_{p}" for ours, theirs in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for p in "qkv"},
    "self_attn.o": "attn1.to_out.0",
    "cross_attn.o": "attn2.to_out.0",
    **{f"{ours}.norm_{p}": f"{theirs}.norm_{p}" for ours, theirs in (("self_attn", "attn1"), ("cross_attn", "attn2"))
       for p in "qk"},
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "norm3": "norm2",
}
DIFFUSERS_BLOCK_PARAMS = {"modulation": "scale_shift_table"}

_BLOCK_RE = re.compile(r"^(blocks\.\d+)\.(.+)$")


def _rename(key: str, top_modules: dict, top_params: dict, block_modules: dict, block_params: dict) -> str:
    m = _BLOCK_RE.match(key)
    prefix, rest, modules, params = (m[1] + ".", m[2], block_modules, block_params) if m else (
        "", key, top_modules, top_params)
    if rest in params:
        return prefix + params[rest]
    module, _, param = rest.rpartition(".")
    if module in modules:
        return f"{prefix}{modules[module]}.{param}"
    return key


def wan_to_diffusers(key: str) -> str:
    """Original Wan parameter name -> diffusers ``WanTransformer3DModel`` name (unknown names unchanged)."""
    return _rename(key, DIFFUSERS_TOP_MODULES, DIFFUSERS_TOP_PARAMS, DIFFUSERS_BLOCK_MODULES, DIFFUSERS_BLOCK_PARAMS)


def _inverse(d: dict) -> dict:
    return {v: k for k, v in d.items()}


def diffusers_to_wan(key: str) -> str:
    """Diffusers ``WanTransformer3DModel`` parameter name -> original Wan name (unknown names unchanged)."""
    return _rename(key, _inverse(DIFFUSERS_TOP_MODULES), _inverse(DIFFUSERS_TOP_PARAMS),
                   _inverse(DIFFUSERS_BLOCK_MODULES), _inverse(DIFFUSERS_BLOCK_PARAMS))


def looks_like_diffusers(keys) -> bool:
    return any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys)


def normalize_key(key: str) -> str:
    """Strip training-wrapper segments and ``module.``/``model.`` prefixes from one key (§8.2 steps 2-3)."""
    for seg in WRAPPER_SEGMENTS:
        key = key.replace(seg, "")
    stripped = True
    while stripped:
        stripped = False
        for p in LEADING_PREFIXES:
            if key.startswith(p):
                key, stripped = key[len(p):], True
    return key


def normalize_keys(sd: StateDict) -> StateDict:
    """Rename every key to Wan's original name: wrappers and prefixes removed, diffusers names mapped.

    Raises WeightsError if two source keys end up with the same name. A lazy input stays lazy.
    """
    new_to_old: dict[str, str] = {}
    clashes = []
    names = {old: normalize_key(old) for old in sd}
    diffusers = looks_like_diffusers(names.values())
    for old, new in names.items():
        if diffusers:
            new = diffusers_to_wan(new)
        if new in new_to_old:
            clashes.append(f"{new_to_old[new]!r} and {old!r} -> {new!r}")
        new_to_old[new] = old
    if clashes:
        raise WeightsError(
            f"{len(clashes)} key(s) collide after removing wrapper prefixes: {_listing(clashes)}. "
            "The file holds more than one copy of the model; pick one with key=..."
        )
    if isinstance(sd, LazyStateDict):
        return sd.renamed(new_to_old)
    return {new: sd[old] for new, old in new_to_old.items()}


# ----------------------------------------------------------------------------------------------
# Strict checking


def _listing(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def infer_dims(sd: StateDict) -> dict[str, int]:
    """Architecture sizes readable from a (normalised) Wan state dict's shapes; absent entries are skipped."""
    probes = {
        "dim": ("patch_embedding.weight", 0), "in_dim": ("patch_embedding.weight", 1),
        "text_dim": ("text_embedding.0.weight", 1), "freq_dim": ("time_embedding.0.weight", 1),
        "ffn_dim": ("blocks.0.ffn.0.weight", 0),
    }
    dims = {name: tensor_shape(sd, key)[axis] for name, (key, axis) in probes.items() if key in sd}
    layers = {int(m[1]) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))}
    if layers:
        dims["num_layers"] = max(layers) + 1
    return dims


def _guess_identity(keys: list[str]) -> str:
    if any(_LORA_RE.match(k) for k in keys):
        return "a LoRA file (pass it as lora=... with its base checkpoint)"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys) and any("conv" in k for k in keys):
        return "a VAE (e.g. Wan2.1_VAE.pth)"
    if "token_embedding.weight" in keys or any(k.startswith(("shared.", "encoder.block.")) for k in keys):
        return "a text encoder (e.g. models_t5_umt5-xxl-enc-bf16.pth)"
    return "not a Wan DiT generator"


def check_state_dict(model: nn.Module, sd: StateDict, source: str) -> None:
    """Raise ONE WeightsError naming every missing, unexpected and mis-shaped key; touches nothing."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [k for k in expected if k in sd and tensor_shape(sd, k) != expected[k]]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{source}: the checkpoint does not match the model ({len(sd)} tensors read, {len(expected)} expected)."]
    found = len(expected) - len(missing)
    if found < len(expected) / 2:
        lines.append(
            f"  Only {found} of the model's {len(expected)} parameter names are present: this looks like "
            f"{_guess_identity(list(sd))}. Pass the generator checkpoint (see `deepforcing.model_files.describe()`)."
        )
    if missing:
        lines.append(f"  {len(missing)} missing (in the model, not in the checkpoint):")
        lines += [f"    {k} {_fmt_shape(expected[k])}" for k in missing[:MAX_LISTED]]
        if len(missing) > MAX_LISTED:
            lines.append(f"    ... and {len(missing) - MAX_LISTED} more")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected (in the checkpoint, not in the model):")
        lines += [f"    {k} {_fmt_shape(tensor_shape(sd, k))}" for k in unexpected[:MAX_LISTED]]
        if len(unexpected) > MAX_LISTED:
            lines.append(f"    ... and {len(unexpected) - MAX_LISTED} more")
    if misshaped:
        lines.append(f"  {len(misshaped)} mis-shaped:")
        lines += [
            f"    {k}: checkpoint {_fmt_shape(tensor_shape(sd, k))}, model {_fmt_shape(expected[k])}"
            for k in misshaped[:MAX_LISTED]
        ]
        if len(misshaped) > MAX_LISTED:
            lines.append(f"    ... and {len(misshaped) - MAX_LISTED} more")
    theirs = infer_dims(sd)
    ours = infer_dims(LazyStateDict({k: (None, s) for k, s in expected.items()}))
    differ = {k: (theirs[k], ours[k]) for k in theirs if k in ours and theirs[k] != ours[k]}
    if differ:
        lines.append(
            "  The checkpoint is a model of other dimensions: "
            + ", ".join(f"{k} {a} (model {b})" for k, (a, b) in differ.items())
            + ". Build the model from the checkpoint's config.json (ModelConfig.from_dict) or pick the right preset."
        )
    raise WeightsError("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# config.json

# ModelConfig field <- diffusers WanTransformer3DModel config key.
DIFFUSERS_CONFIG_KEYS = {
    "ffn_dim": "ffn_dim", "freq_dim": "freq_dim", "num_heads": "num_attention_heads", "num_layers": "num_layers",
    "in_dim": "in_channels", "out_dim": "out_channels", "text_dim": "text_dim", "patch_size": "patch_size",
    "eps": "eps",
}
# Fields a config.json may pin that the loaded model must agree with.
ARCH_FIELDS = ("dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim",
               "text_len", "patch_size", "eps")


def read_config(path: str | Path) -> dict:
    """ModelConfig fields stated by a Wan or diffusers ``config.json`` (a file or its folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CONFIG_NAME if (path / CONFIG_NAME).is_file() else path / DIFFUSERS_SUBFOLDER / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: cannot read the model config.json ({e})") from e
    if "num_attention_heads" in raw:  # diffusers
        out = {ours: raw[theirs] for ours, theirs in DIFFUSERS_CONFIG_KEYS.items() if theirs in raw}
        if "attention_head_dim" in raw:
            out["dim"] = raw["num_attention_heads"] * raw["attention_head_dim"]
    else:
        known = {f.name for f in fields(ModelConfig)}
        out = {k: v for k, v in raw.items() if k in known}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


def model_config(path: str | Path, **overrides) -> ModelConfig:
    """A :class:`ModelConfig` built from a Wan or diffusers ``config.json`` (plus ``overrides``)."""
    return ModelConfig(**{**read_config(path), **overrides})


def check_config(cfg: ModelConfig, stated: dict, source: str) -> None:
    differ = {k: (stated[k], getattr(cfg, k)) for k in ARCH_FIELDS if k in stated and stated[k] != getattr(cfg, k)}
    if differ:
        raise WeightsError(
            f"{source}: config.json describes another model: "
            + ", ".join(f"{k}={a} (model {b})" for k, (a, b) in differ.items())
            + ". Build the model with deepforcing.loading.model_config(<folder>)."
        )


# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Writing (training, tests, conversions)


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
