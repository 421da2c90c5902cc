"""Random weights in the exact files and formats VBench reads (written lazily, once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepforcing.metrics.specs import SPECS
from deepforcing.metrics.weight_files import WEIGHT_FILES


class RandomWeights:
    def __init__(self, root: Path, full_size: bool = False):
        self.root = Path(root)
        self.full_size = full_size
        self._done: set[str] = set()

    def path(self, key: str) -> Path:
        p = self.root / WEIGHT_FILES[key].relpath
        if key not in self._done and not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            getattr(self, f"_make_{key}")(p)
        self._done.add(key)
        return p

    def files(self, dim: str) -> dict[str, Path]:
        return {k: self.path(k) for k in SPECS[dim].weights}

    # -- writers ---------------------------------------------------------------------------------
    #: CLIP towers are reduced (2 layers, width 128) unless full_size=True; the file format, the loader
    #: (clip.load -> build_model, which infers the architecture from the state dict) and the code path are
    #: the same as for the released ViT-B/32 and ViT-L/14. Patch size, resolution and embedding width
    #: (512 / 768, which the aesthetic head needs) are the real ones.
    full_size: bool = False

    def _torchscript_clip(self, name: str, p: Path, embed_dim: int, patch: int) -> None:
        """An OpenAI-style TorchScript archive (fp16): ``clip.load`` reads its state dict and rebuilds the model."""
        import open_clip
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        torch.manual_seed(1)
        if self.full_size:
            model = open_clip.create_model(name, pretrained=None)
        else:
            model = open_clip.model.CLIP(
                embed_dim=embed_dim,
                vision_cfg=CLIPVisionCfg(layers=2, width=128, patch_size=patch, image_size=224),
                text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2, layers=1),
                quick_gelu=True,
            )
        sd = {k: (v.half() if v.is_floating_point() else v).detach().clone() for k, v in model.state_dict().items()}
        sd["input_resolution"] = torch.tensor(224)  # buffers the OpenAI archives carry
        sd["context_length"] = torch.tensor(77)
        sd["vocab_size"] = torch.tensor(49408)
        torch.jit.save(torch.jit.script(_Holder(sd)), str(p))

    def _make_clip_vit_b32(self, p: Path) -> None:
        self._torchscript_clip("ViT-B-32-quickgelu", p, 512, 32)

    def _make_clip_vit_l14(self, p: Path) -> None:
        self._torchscript_clip("ViT-L-14-quickgelu", p, 768, 14)

    def _make_aesthetic_head(self, p: Path) -> None:
        torch.manual_seed(2)
        head = torch.nn.Linear(768, 1)
        with torch.no_grad():  # spread the scores (~N(5, 3)) so an equality check is not trivially met
            head.weight.normal_(0, 3.0)
            head.bias.fill_(5.0)
        torch.save(head.state_dict(), p)

    def _make_dino_vitb16(self, p: Path) -> None:
        import timm

        torch.manual_seed(3)
        m = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        torch.save(m.state_dict(), p)

    def _make_dinov2_vitb14(self, p: Path) -> None:
        """DINOv2's released layout: timm-compatible keys plus ``mask_token``; layer-scale gammas set to
        DINOv2's init value 1.0 so every block contributes (timm initialises them to 1e-5)."""
        import timm

        torch.manual_seed(11)
        m = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0)
        sd = {k: (torch.ones_like(v) if k.endswith(("ls1.gamma", "ls2.gamma")) else v)
              for k, v in m.state_dict().items()}
        sd["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
        torch.save(sd, p)

    def _make_musiq_spaq(self, p: Path) -> None:
        from pyiqa.archs.musiq_arch import MUSIQ

        torch.manual_seed(4)
        m = MUSIQ(pretrained=False, num_class=1)
        with torch.no_grad():  # MOS around 50 with a real spread, so equality checks can fail
            m.head.weight.normal_(0, 2.0)
            m.head.bias.fill_(50.0)
        torch.save(m.state_dict(), p)  # plain state dict, as pyiqa loads it (no weight key)

    def _make_amt_s(self, p: Path) -> None:
        import vbench
        from omegaconf import OmegaConf
        from vbench.third_party.amt.utils.build_utils import build_from_cfg

        torch.manual_seed(5)
        cfg = OmegaConf.load(Path(vbench.__file__).parent / "third_party/amt/cfgs/AMT-S.yaml").network
        m = build_from_cfg(cfg)
        torch.save({"state_dict": m.state_dict()}, p)

    def _make_raft_things(self, p: Path) -> None:
        from easydict import EasyDict
        from vbench.third_party.RAFT.core.raft import RAFT

        torch.manual_seed(6)
        m = torch.nn.DataParallel(RAFT(EasyDict(small=False, mixed_precision=False, alternate_corr=False)))
        torch.save(m.state_dict(), p)  # 'module.'-prefixed keys, as the released checkpoint

    def _make_viclip(self, p: Path) -> None:
        from deepforcing.metrics.vbench_compat import quiet_viclip_import

        ViCLIP = quiet_viclip_import()
        from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer

        torch.manual_seed(7)
        m = ViCLIP(tokenizer=SimpleTokenizer(str(self.path("viclip_bpe"))), pretrain=None)
        sd = m.state_dict()
        # the constructor leaves several tensors uninitialised (torch.empty: often all zeros, e.g. the
        # vision projection, which makes every embedding 0 and the cosine NaN); give them values
        for k, v in sd.items():
            if not v.is_floating_point() or v.numel() <= 1:
                continue
            # garbage may also be denormals that vanish in fp16
            bad = not torch.isfinite(v).all() or v.abs().max() > 1e4 or v.abs().max() < 1e-6 or v.std() == 0
            if not bad:
                continue
            if k.endswith("weight") and ("ln" in k or "norm" in k):
                sd[k] = 1 + 0.02 * torch.randn_like(v)
            else:
                sd[k] = 0.02 * torch.randn_like(v)
        torch.save({"model": {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}}, p)

    def _make_viclip_bpe(self, p: Path) -> None:
        import shutil

        from deepforcing.metrics.weight_files import _clip_pkg_bpe

        shutil.copy(_clip_pkg_bpe(), p)


class _Holder(torch.nn.Module):
    """A scriptable module whose state dict has exactly the given (dotted) keys."""

    def __init__(self, sd: dict[str, torch.Tensor]):
        super().__init__()
        for k, v in sd.items():
            mod = self
            *parents, leaf = k.split(".")
            for name in parents:
                if not hasattr(mod, name):
                    mod.add_module(name, torch.nn.Module())
                mod = getattr(mod, name)
            mod.register_buffer(leaf, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def import_vbench_long(monkeypatch):
    """Import vbench 0.1.5's ``vbench2_beta_long`` (VBench-Long). It does not import as shipped: torchvision
    0.29 has no ``io.write_video`` and ``scenedetect`` / ``moviepy.editor`` / ``dreamsim`` are undeclared.
    None of them is used by the functions our tests call, so empty stand-ins are put in place first."""
    import sys
    import types

    import torchvision.io

    monkeypatch.setattr(torchvision.io, "write_video", lambda *a, **k: None, raising=False)
    for name, attrs in {"scenedetect": ("open_video", "SceneManager", "split_video_ffmpeg"),
                        "scenedetect.detectors": ("ContentDetector",),
                        "scenedetect.video_splitter": ("split_video_ffmpeg",),
                        "moviepy": (), "moviepy.editor": ("VideoFileClip",), "dreamsim": ("dreamsim",)}.items():
        try:
            mod = __import__(name, fromlist=["_"])
            if all(hasattr(mod, a) for a in attrs):
                continue
        except ImportError:
            pass
        mod = types.ModuleType(name)
        for a in attrs:
            setattr(mod, a, None)
        monkeypatch.setitem(sys.modules, name, mod)
    import vbench2_beta_long

    return vbench2_beta_long


def synthetic_frames(t: int = 16, h: int = 128, w: int = 160, seed: int = 0, speed: int = 3,
                     decay: float = 0.0) -> np.ndarray:
    """A textured background with a moving square; ``decay`` > 0 fades contrast over time."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
    bg = (bg + np.roll(bg, 1, 0) + np.roll(bg, 1, 1)) / 3
    out = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        f = np.roll(bg, i * speed // 2, axis=1).copy()
        y, x = (10 + i * speed) % max(1, h - 30), (20 + 2 * i * speed) % max(1, w - 40)
        f[y:y + 30, x:x + 40] = (220, 60, 90)
        f += rng.normal(0, 4, f.shape)
        if decay:
            f = 128 + (f - 128) * max(0.0, 1 - decay * i)
        out[i] = np.clip(f, 0, 255).astype(np.uint8)
    return out


def subject_case_videos(root: Path) -> tuple[list[str], list[int]]:
    """The two videos of the subject-consistency golden case (same as the equivalence tests' videos),
    written losslessly under ``root``; returns their paths and the sums of their uint8 frames."""
    from deepforcing.metrics.video import write_lossless

    arrays = [synthetic_frames(8, 128, 160, 0), synthetic_frames(7, 136, 128, 1, speed=9)]
    paths = [str(write_lossless(Path(root) / f"v{i + 1}.mp4", a, 8)) for i, a in enumerate(arrays)]
    return paths, [int(a.astype(np.int64).sum()) for a in arrays]
