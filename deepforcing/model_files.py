"""Where every model file is expected, per model kind, and one check that names all missing files.

Nothing here imports torch or reads a weight: :meth:`WeightsConfig.check` only looks at the file
system, so a run fails in a second, before anything heavy is loaded, with ONE
:class:`~deepforcing.errors.WeightsError` listing every missing file, its expected path and the
``huggingface-cli download`` line that fetches it. Nothing is ever downloaded by the harness.

Default layout under the weights root (``$DEEPFORCING_WEIGHTS``, else ``./weights``). It mirrors the
reference repositories' own layouts, so a root pointing at a Self-Forcing or LongLive checkout
works as is::

    <root>/
      wan_models/Wan2.1-T2V-1.3B/              Wan-AI/Wan2.1-T2V-1.3B
        config.json
        diffusion_pytorch_model.safetensors    (kind "wan" only: the base DiT)
        models_t5_umt5-xxl-enc-bf16.pth        (text encoder)
        Wan2.1_VAE.pth                         (VAE)
        google/umt5-xxl/                       (tokenizer folder)
      checkpoints/self_forcing_dmd.pt          gdhe17/Self-Forcing
      checkpoints/rolling_forcing_dmd.pt       TencentARC/RollingForcing
      longlive_models/models/longlive_base.pt  Efficient-Large-Model/LongLive-1.3B
      longlive_models/models/lora.pt           Efficient-Large-Model/LongLive-1.3B
      chunkwise/causal_forcing.pt              zhuhz22/Causal-Forcing
      autoregressive_checkpoint/model.pt       tianweiy/CausVid

Every path can be overridden (``paths={"self_forcing.generator": "/data/sf.pt"}``); relative
overrides are taken relative to the root, Wan files relative to ``wan_dir``. Kind ``tiny`` needs no
files (random weights); kind ``toy`` is trained on the toy world (deepforcing.toyworld) and its
checkpoint ships inside the package (:data:`TOY_CHECKPOINT`), with a fixed codec and text table.
On the command line (conf/model/*.yaml) the root is ``model.weights_root``
and a kind's own files are ``model.checkpoint`` and ``model.lora``; the messages use those names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deepforcing.errors import ConfigError, WeightsError

WEIGHTS_ROOT_ENV = "DEEPFORCING_WEIGHTS"
DEFAULT_ROOT = "weights"
DEFAULT_WAN_DIR = "wan_models/Wan2.1-T2V-1.3B"
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B"
# The command line's names (conf/model/*.yaml, deepforcing.pipeline.ModelSpec) for the root and for
# the per-kind files ModelSpec passes in ``paths`` as "<kind>.generator" / "<kind>.lora".
ROOT_KEY = "model.weights_root"
OVERRIDE_KEYS = {"generator": "model.checkpoint", "lora": "model.lora"}


@dataclass(frozen=True)
class WeightFile:
    """One file (or folder) a model kind needs, and where it comes from."""

    id: str
    relpath: str  # default location, relative to the root (or to wan_dir when in_wan_dir)
    repo: str  # Hugging Face repository
    repo_path: str  # the file's (or folder's) path inside that repository
    description: str
    in_wan_dir: bool = False
    is_dir: bool = False


def _wan(id_: str, name: str, description: str, is_dir: bool = False) -> WeightFile:
    return WeightFile(id_, name, WAN_REPO, name, description, in_wan_dir=True, is_dir=is_dir)


FILES: dict[str, WeightFile] = {
    f.id: f
    for f in (
        _wan("wan.config", "config.json", "Wan2.1-T2V-1.3B architecture (config.json)"),
        _wan("wan.dit", "diffusion_pytorch_model.safetensors", "Wan2.1-T2V-1.3B base DiT, fp32, 5.7 GB"),
        _wan("wan.t5", "models_t5_umt5-xxl-enc-bf16.pth", "umT5-XXL text encoder, bf16"),
        _wan("wan.tokenizer", "google/umt5-xxl", "umT5-XXL tokenizer folder", is_dir=True),
        _wan("wan.vae", "Wan2.1_VAE.pth", "Wan2.1 VAE"),
        WeightFile("self_forcing.generator", "checkpoints/self_forcing_dmd.pt", "gdhe17/Self-Forcing",
                   "checkpoints/self_forcing_dmd.pt", "Self-Forcing DMD generator (generator_ema)"),
        WeightFile("rolling_forcing.generator", "checkpoints/rolling_forcing_dmd.pt", "TencentARC/RollingForcing",
                   "checkpoints/rolling_forcing_dmd.pt", "Rolling Forcing DMD generator (generator_ema)"),
        WeightFile("longlive.generator", "longlive_models/models/longlive_base.pt",
                   "Efficient-Large-Model/LongLive-1.3B", "models/longlive_base.pt",
                   "LongLive stage-1 base generator (generator)"),
        WeightFile("longlive.lora", "longlive_models/models/lora.pt", "Efficient-Large-Model/LongLive-1.3B",
                   "models/lora.pt", "LongLive stage-2 LoRA, r = alpha = 256 (generator_lora)"),
        WeightFile("causal_forcing.generator", "chunkwise/causal_forcing.pt", "zhuhz22/Causal-Forcing",
                   "chunkwise/causal_forcing.pt", "Causal Forcing chunk-wise generator (generator)"),
        WeightFile("causvid.generator", "autoregressive_checkpoint/model.pt", "tianweiy/CausVid",
                   "autoregressive_checkpoint/model.pt", "CausVid autoregressive generator (generator)"),
    )
}

# The toy model's checkpoint folder (config.json + diffusion_pytorch_model.safetensors), part of the package.
TOY_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "toy"
# Kinds that need nothing under the weights root: random weights, or files shipped with the package.
EMBEDDED_KINDS = {"tiny": "none: random weights", "toy": "none: checkpoint in the package, deepforcing/assets/toy"}

# What each kind's generator needs (the config.json gives the architecture).
GENERATOR_FILES: dict[str, tuple[str, ...]] = {
    "tiny": (),
    "toy": (),
    "wan": ("wan.config", "wan.dit"),
    "self_forcing": ("wan.config", "self_forcing.generator"),
    "rolling_forcing": ("wan.config", "rolling_forcing.generator"),
    "longlive": ("wan.config", "longlive.generator", "longlive.lora"),
    "causal_forcing": ("wan.config", "causal_forcing.generator"),
    "causvid": ("wan.config", "causvid.generator"),
}
# The rest of a text-to-video run, shared by every kind but "tiny".
COMPONENT_FILES: dict[str, tuple[str, ...]] = {
    "generator": (),  # per kind, GENERATOR_FILES
    "text_encoder": ("wan.t5", "wan.tokenizer"),
    "vae": ("wan.vae",),
}
ALL_COMPONENTS = tuple(COMPONENT_FILES)
KINDS = tuple(GENERATOR_FILES)


def default_root() -> Path:
    return Path(os.environ.get(WEIGHTS_ROOT_ENV) or DEFAULT_ROOT)


@dataclass
class WeightsConfig:
    """Where the model files live: a root, the Wan folder under it, and per-file overrides by id."""

    root: str | Path = field(default_factory=default_root)
    wan_dir: str | Path = DEFAULT_WAN_DIR
    paths: Mapping[str, str | Path] = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.paths) - set(FILES))
        if unknown:
            # ModelSpec fills paths from model.checkpoint and model.lora: name those keys when they are the cause
            hints = []
            for i in unknown:
                kind, _, part = i.rpartition(".")
                if kind in GENERATOR_FILES and part in OVERRIDE_KEYS:
                    hints.append(f"{OVERRIDE_KEYS[part]} is set, but kind {kind!r} has no {part} file to replace")
            raise ConfigError("; ".join(hints) if hints else
                              f"unknown file id(s) {unknown} in WeightsConfig.paths; known ids: {', '.join(FILES)}")

    @classmethod
    def from_dict(cls, d: Mapping | None) -> WeightsConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - {"root", "wan_dir", "paths"})
        if unknown:
            raise ConfigError(f"unknown weights setting(s) {unknown}; allowed: root, wan_dir, paths")
        if d.get("root") is None:
            d.pop("root", None)
        return cls(**{k: v for k, v in d.items() if k != "paths"}, paths=dict(d.get("paths") or {}))

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser()

    @property
    def wan_path(self) -> Path:
        return self.root_path / Path(self.wan_dir).expanduser()

    def path(self, file_id: str) -> Path:
        """Where file ``file_id`` (e.g. ``"self_forcing.generator"``) is expected."""
        if file_id not in FILES:
            raise ConfigError(f"unknown weight file {file_id!r}; known ids: {', '.join(FILES)}")
        f = FILES[file_id]
        base = self.wan_path if f.in_wan_dir else self.root_path
        return base / Path(self.paths.get(file_id, f.relpath)).expanduser()

    def generator(self, kind: str) -> Path:
        """The generator checkpoint of ``kind`` (the Wan folder for ``wan``)."""
        _check_kind(kind)
        if kind == "tiny":
            raise ConfigError("kind 'tiny' has random weights and no checkpoint")
        if kind == "toy":
            return TOY_CHECKPOINT
        return self.wan_path if kind == "wan" else self.path(f"{kind}.generator")

    def lora(self, kind: str) -> Path | None:
        _check_kind(kind)
        return self.path(f"{kind}.lora") if f"{kind}.lora" in FILES else None

    def files(self, kind: str, components: Iterable[str] = ALL_COMPONENTS) -> list[str]:
        """File ids ``kind`` needs for ``components`` (``generator``, ``text_encoder``, ``vae``)."""
        _check_kind(kind)
        components = tuple(components)
        bad = sorted(set(components) - set(COMPONENT_FILES))
        if bad:
            raise ConfigError(f"unknown component(s) {bad}; known: {', '.join(COMPONENT_FILES)}")
        if kind in EMBEDDED_KINDS:
            return []
        ids = list(GENERATOR_FILES[kind]) if "generator" in components else []
        for c in components:
            ids += [i for i in COMPONENT_FILES[c] if i not in ids]
        return ids

    def present(self, file_id: str) -> bool:
        p = self.path(file_id)
        return (p.is_dir() and any(p.iterdir())) if FILES[file_id].is_dir else p.is_file()

    def download_command(self, file_id: str) -> str:
        """A ``huggingface-cli download`` line that puts ``file_id`` where it is expected."""
        f, target = FILES[file_id], self.path(file_id)
        what = f'--include "{f.repo_path}/*"' if f.is_dir else f.repo_path
        if target.as_posix().endswith("/" + f.repo_path):
            local_dir = Path(target.as_posix()[: -len(f.repo_path) - 1])
            return f"huggingface-cli download {f.repo} {what} --local-dir {local_dir}"
        tmp = self.root_path / "downloads"
        return (f"huggingface-cli download {f.repo} {what} --local-dir {tmp} && "
                f"mv {tmp / f.repo_path} {target}")

    def check(self, kind: str, components: Iterable[str] = ALL_COMPONENTS) -> dict[str, Path]:
        """Paths of every file ``kind`` needs; ONE WeightsError listing all that are missing."""
        ids = self.files(kind, components)
        missing = [i for i in ids if not self.present(i)]
        if missing:
            lines = [
                f"{len(missing)} of the {len(ids)} model files that kind {kind!r} needs are missing "
                f"(weights root {self.root_path}; {self.where_hint(kind)}):"
            ]
            for i in missing:
                f = FILES[i]
                lines += [
                    f"  - {i}: {f.description}{' (folder)' if f.is_dir else ''}",
                    f"      expected at {self.path(i)}",
                    f"      from https://huggingface.co/{f.repo} ({f.repo_path}):",
                    f"      {self.download_command(i)}",
                ]
            raise WeightsError("\n".join(lines))
        return {i: self.path(i) for i in ids}

    def where_hint(self, kind: str) -> str:
        """How to point a run at files elsewhere, in the command line's keys (conf/model/*.yaml)."""
        hint = f"set another root with ${WEIGHTS_ROOT_ENV} or {ROOT_KEY}=<folder>"
        names = {"generator": "the generator file", "lora": "the LoRA file"}
        single = [f"{names[part]} with {key}=<file>" for part, key in OVERRIDE_KEYS.items()
                  if f"{kind}.{part}" in FILES]
        return hint + (f", or name {' and '.join(single)}" if single else "")

    def describe(self, kinds: Iterable[str] = KINDS) -> str:
        """A Markdown table: kind, file id, expected path, Hugging Face source, present.

        Generator files are listed per kind; the text encoder and VAE, shared by every kind but
        ``tiny``, are listed once.
        """
        rows = ["| kind | file | expected path | source (repo: file) | present |", "|---|---|---|---|---|"]

        def row(kind: str, i: str) -> str:
            f = FILES[i]
            return (f"| {kind} | {i} | `{self.path(i)}` | {f.repo}: `{f.repo_path}` | "
                    f"{'yes' if self.present(i) else 'no'} |")

        for kind in kinds:
            ids = self.files(kind, components=("generator",))
            rows += [row(kind, i) for i in ids] or [f"| {kind} | ({EMBEDDED_KINDS.get(kind, 'none')}) | | | yes |"]
        shared = [i for c in ALL_COMPONENTS if c != "generator" for i in COMPONENT_FILES[c]]
        rows += [row("all but tiny and toy", i) for i in shared]
        return "\n".join(rows) + "\n"


def _check_kind(kind: str) -> None:
    if kind not in GENERATOR_FILES:
        raise ConfigError(f"unknown model kind {kind!r}; known kinds: {', '.join(KINDS)}")


def check(kind: str, config: WeightsConfig | None = None, components: Iterable[str] = ALL_COMPONENTS):
    """:meth:`WeightsConfig.check` on ``config`` (default: the default layout)."""
    return (config or WeightsConfig()).check(kind, components)


def describe(config: WeightsConfig | None = None, kinds: Iterable[str] = KINDS) -> str:
    """:meth:`WeightsConfig.describe` on ``config`` (default: the default layout)."""
    return (config or WeightsConfig()).describe(kinds)
