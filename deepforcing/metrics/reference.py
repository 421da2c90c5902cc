"""Reference path: vbench 0.1.5's own ``compute_<dimension>`` functions, run offline on video files.

Used by the equivalence tests and ``benchmarks/eval_speed.py``. Submodule descriptions are built here
from explicit weight paths instead of ``vbench.utils.init_submodules`` (which downloads what it does
not find). For VBench-Long, ``long_reference`` writes each clip losslessly and averages vbench's clip
scores, as ``vbench2_beta_long`` does (it cannot run itself on torchvision 0.29: no ``write_video``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch

from . import protocol
from .specs import SPECS
from .vbench_compat import BPE, cache_dir_with_bpe, quiet_viclip_import
from .video import decode, write_lossless


def submodules(dim: str, files: dict[str, Path], dino_repo: str | Path | None = None):
    import vbench

    vb = Path(vbench.__file__).parent
    if dim == "temporal_flickering":
        return []
    if dim == "background_consistency":
        return [str(files["clip_vit_b32"]), False]
    if dim == "aesthetic_quality":
        head = Path(files["aesthetic_head"])
        if head.name != "sa_0_4_vit_l_14_linear.pth":
            raise ValueError("vbench looks for <dir>/sa_0_4_vit_l_14_linear.pth; name the head file so")
        return [str(files["clip_vit_l14"]), str(head.parent)]
    if dim == "imaging_quality":
        return {"model_path": str(files["musiq_spaq"])}
    if dim == "motion_smoothness":
        return {"config": str(vb / "third_party/amt/cfgs/AMT-S.yaml"), "ckpt": str(files["amt_s"])}
    if dim == "dynamic_degree":
        return {"model": str(files["raft_things"])}
    if dim == "subject_consistency":
        if dino_repo is None:
            raise ValueError("subject_consistency's reference needs a clone of facebookresearch/dino (dino_repo)")
        return {"repo_or_dir": str(dino_repo), "path": str(files["dino_vitb16"]), "model": "dino_vitb16",
                "source": "local", "read_frame": False}
    if dim == "overall_consistency":
        return {"pretrain": str(files["viclip"])}
    raise ValueError(f"vbench has no reference function for {dim!r}")


@contextlib.contextmanager
def _offline_env(dim: str, files: dict[str, Path], viclip_eval: bool = True):
    """Point vbench and torch.hub at local files for the duration of one reference run.

    ``viclip_eval``: vbench 0.1.5 never calls ``.eval()`` on ViCLIP, so its DropPath layers (rates up to
    0.1) stay active and overall-consistency scores change from run to run. With ``viclip_eval=True``
    (default) the reference puts the model in eval mode, the deterministic definition we implement;
    nothing else in vbench's function changes.
    """
    undo = []
    if dim == "overall_consistency":
        quiet_viclip_import()
        import vbench.overall_consistency as oc

        if viclip_eval:
            orig = oc.ViCLIP
            oc.ViCLIP = lambda **kw: orig(**kw).eval()
            undo.append(lambda: setattr(oc, "ViCLIP", orig))

        bpe = files.get("viclip_bpe")
        ctx = cache_dir_with_bpe(bpe)
        d = ctx.__enter__()
        old = oc.CACHE_DIR
        oc.CACHE_DIR = d
        undo.append(lambda: (setattr(oc, "CACHE_DIR", old), ctx.__exit__(None, None, None)))
        assert (Path(d) / "ViCLIP" / BPE).is_file()
    if dim == "subject_consistency":
        hub = tempfile.TemporaryDirectory(prefix="torchhub_")
        ck = Path(hub.name) / "checkpoints"
        ck.mkdir()
        os.symlink(Path(files["dino_vitb16"]).resolve(), ck / "dino_vitbase16_pretrain.pth")
        old_hub = torch.hub.get_dir()
        torch.hub.set_dir(hub.name)
        undo.append(lambda: (torch.hub.set_dir(old_hub), hub.cleanup()))
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


def vbench_run(dim: str, videos: list[str], files: dict[str, Path], device: str = "cpu",
               prompts: list[str] | None = None, dino_repo=None, viclip_eval: bool = True,
               **kwargs) -> tuple[float, list[float]]:
    """vbench's ``compute_<dim>`` on ``videos`` (mp4 paths): (the run's dimension score as vbench reports it,
    per-video scores in order)."""
    import importlib

    name = SPECS[dim].vbench_name
    if name is None:
        raise ValueError(f"vbench has no reference function for {dim!r}")
    with _offline_env(dim, files, viclip_eval), tempfile.TemporaryDirectory(prefix="vbench_ref_") as tmp:
        info = [{"prompt_en": (prompts[i] if prompts else "none"), "dimension": [name], "video_list": [v]}
                for i, v in enumerate(videos)]
        jp = Path(tmp) / "full_info.json"
        jp.write_text(json.dumps(info))
        mod = importlib.import_module(f"vbench.{name}")
        fn = getattr(mod, f"compute_{name}")
        with torch.no_grad():
            run, per_video = fn(str(jp), device, submodules(dim, files, dino_repo), **kwargs)
    by_path = {}
    for r in per_video:
        by_path.setdefault(r["video_path"], float(r["video_results"]))
    return float(run), [by_path[v] for v in videos]


def vbench_scores(dim: str, videos: list[str], files: dict[str, Path], device: str = "cpu",
                  prompts: list[str] | None = None, dino_repo=None, viclip_eval: bool = True,
                  **kwargs) -> list[float]:
    """Per-video scores from vbench's ``compute_<dim>`` on ``videos`` (mp4 paths), in order."""
    return vbench_run(dim, videos, files, device, prompts, dino_repo, viclip_eval, **kwargs)[1]


def long_reference(dim: str, video: str, files: dict[str, Path], seconds: float, device: str = "cpu",
                   prompt: str | None = None, dino_repo=None, **kwargs) -> tuple[float, list[float]]:
    """VBench-Long on one file: split as ``vbench2_beta_long`` does, write clips losslessly, score each with
    vbench's function, average. Returns (long score, clip scores)."""
    v = decode(video)
    clips = protocol.clips_for(protocol.Span(0, v.num_frames), v.fps, seconds)
    with tempfile.TemporaryDirectory(prefix="vbench_long_") as tmp:
        paths = []
        for i, c in enumerate(clips):
            p = Path(tmp) / f"clip_{i:03d}.mp4"
            write_lossless(p, v.frames[c.start:c.end], int(v.fps))
            paths.append(str(p))
        scores = vbench_scores(dim, paths, files, device, [prompt] * len(paths) if prompt else None, dino_repo,
                               **kwargs)
    return sum(scores) / len(scores), scores
