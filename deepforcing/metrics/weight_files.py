"""Metric weight files: where each lives (VBench's cache layout and file names), never downloaded.

Resolution order for each file: an explicit path from the config, then ``<cache_dir>/<VBench's
relative path>``, where ``cache_dir`` is the config's, else ``$VBENCH_CACHE_DIR``, else
``~/.cache/vbench`` (exactly where ``vbench`` itself looks). A missing file makes its dimension skip with
one message naming the file and where to get it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deepforcing.errors import WeightsError

from .specs import SPECS


@dataclass(frozen=True)
class WeightFile:
    key: str
    relpath: str  # relative to the VBench cache dir, VBench's own name
    url: str
    note: str = ""
    fallbacks: tuple[str, ...] = ()  # other places the same file may already be (no download)


def _clip_pkg_bpe() -> str:
    try:
        import importlib.util

        spec = importlib.util.find_spec("clip")
        if spec and spec.origin:
            return str(Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz")
    except (ImportError, ValueError):
        pass
    return ""


WEIGHT_FILES: dict[str, WeightFile] = {
    w.key: w
    for w in (
        WeightFile(
            "clip_vit_b32", "clip_model/ViT-B-32.pt",
            "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            "OpenAI CLIP ViT-B/32 TorchScript archive (~338 MB)",
        ),
        WeightFile(
            "clip_vit_l14", "clip_model/ViT-L-14.pt",
            "https://openaipublic.azureedge.net/clip/models/"
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
            "OpenAI CLIP ViT-L/14 TorchScript archive (~890 MB)",
        ),
        WeightFile(
            "aesthetic_head", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth",
            "https://github.com/LAION-AI/aesthetic-predictor/raw/main/sa_0_4_vit_l_14_linear.pth",
            "LAION aesthetic linear head (4 KB)",
        ),
        WeightFile(
            "dino_vitb16", "dino_model/dino_vitbase16_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
            "DINO ViT-B/16 backbone (~343 MB)",
        ),
        WeightFile(
            "dinov2_vitb14", "dinov2_model/dinov2_vitb14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
            "DINOv2 ViT-B/14 backbone (~346 MB; only for slow-fast fusion of subject consistency)",
            fallbacks=("~/.cache/torch/hub/checkpoints/dinov2_vitb14_pretrain.pth",),
        ),
        WeightFile(
            "musiq_spaq", "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",
            "https://github.com/chaofengc/IQA-PyTorch/releases/download/v0.1-weights/"
            "musiq_spaq_ckpt-358bb6af.pth",
            "MUSIQ trained on SPAQ (~109 MB)",
        ),
        WeightFile(
            "amt_s", "amt_model/amt-s.pth",
            "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth",
            "AMT-S frame interpolator (~12 MB)",
        ),
        WeightFile(
            "raft_things", "raft_model/models/raft-things.pth",
            "https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip",
            "RAFT Things checkpoint; unzip models.zip into raft_model/",
        ),
        WeightFile(
            "viclip", "ViCLIP/ViClip-InternVid-10M-FLT.pth",
            "https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/ViClip-InternVid-10M-FLT.pth",
            "ViCLIP ViT-L/14 ({'model': state_dict})",
        ),
        WeightFile(
            "viclip_bpe", "ViCLIP/bpe_simple_vocab_16e6.txt.gz",
            "https://raw.githubusercontent.com/openai/CLIP/main/clip/bpe_simple_vocab_16e6.txt.gz",
            "CLIP BPE vocabulary (also shipped inside the openai-clip package, used from there if absent)",
            fallbacks=("<openai-clip package>",),
        ),
    )
}


def default_cache_dir() -> Path:
    env = os.environ.get("VBENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vbench"


@dataclass(frozen=True)
class WeightStatus:
    key: str
    path: Path
    present: bool
    source: str  # "config", "cache", "package"


def locate(key: str, cache_dir: str | os.PathLike | None = None, explicit: dict | None = None) -> WeightStatus:
    wf = WEIGHT_FILES[key]
    if explicit and key in explicit:
        p = Path(explicit[key]).expanduser()
        return WeightStatus(key, p, p.is_file(), "config")
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    p = base / wf.relpath
    if p.is_file():
        return WeightStatus(key, p, True, "cache")
    for fb in wf.fallbacks:
        q = Path(_clip_pkg_bpe()) if fb == "<openai-clip package>" else Path(fb).expanduser()
        if str(q) and q.is_file():
            return WeightStatus(key, q, True, "package")
    return WeightStatus(key, p, False, "cache")


def missing_message(dim: str, statuses: list[WeightStatus]) -> str:
    parts = []
    for st in statuses:
        wf = WEIGHT_FILES[st.key]
        parts.append(f"{st.path} ({wf.note}; get it from {wf.url})")
    return (
        f"{dim}: skipped, weight file missing: " + "; ".join(parts)
        + ". Place it there (or set VBENCH_CACHE_DIR / an explicit path in the config); nothing is downloaded."
    )


def resolve(dim: str, cache_dir=None, explicit=None, keys: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Paths of every file ``dim`` needs (``keys``, default its spec's), or WeightsError naming what is
    missing and where to get it."""
    statuses = [locate(k, cache_dir, explicit) for k in (SPECS[dim].weights if keys is None else keys)]
    missing = [s for s in statuses if not s.present]
    if missing:
        raise WeightsError(missing_message(dim, missing))
    return {s.key: s.path for s in statuses}


DINO_REPO_RELPATH = "dino_model/facebookresearch_dino_main"


def dino_backend(cache_dir=None, explicit: dict | None = None) -> tuple[str, str | None]:
    """Which network subject consistency builds: ``("dino_repo", path)`` when a clone of facebookresearch/dino
    is given (``explicit["dino_repo"]``) or sits where VBench's local mode keeps it
    (``<cache>/dino_model/facebookresearch_dino_main`` with its ``hubconf.py``), else ``("timm", None)``."""
    repo = (explicit or {}).get("dino_repo")
    if repo is None:
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        cand = base / DINO_REPO_RELPATH
        repo = str(cand) if (cand / "hubconf.py").is_file() else None
    return ("dino_repo", str(repo)) if repo else ("timm", None)


def check(dims=None, cache_dir=None, explicit=None) -> list[dict]:
    """One row per (dimension, weight file): what is present and where. Imports no model code."""
    rows = []
    for dim in dims or sorted(SPECS):
        keys = SPECS[dim].weights
        if not keys:
            rows.append({"dimension": dim, "file": "(none needed)", "present": True, "path": "", "url": ""})
        for k in keys:
            st = locate(k, cache_dir, explicit)
            rows.append({
                "dimension": dim, "file": WEIGHT_FILES[k].relpath, "present": st.present,
                "path": str(st.path), "url": WEIGHT_FILES[k].url,
            })
    return rows
