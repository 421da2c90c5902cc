"""Tiny random weights written in the real file formats (Wan's key names), for loading tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from deepforcing.model import CausalWan, random_init_, tiny

FIXTURES = Path(__file__).parent / "fixtures"
T5_MANIFEST = json.loads((FIXTURES / "text" / "wan_t5_tiny_manifest.json").read_text())
VAE_MANIFEST = json.loads((FIXTURES / "vae" / "wan_vae_tiny_manifest.json").read_text())


def random_state_from_manifest(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every (key, shape), in manifest order, from one seeded generator.

    Norm gains are 1 + 0.1 N(0,1), biases 0.1 N(0,1), other tensors N(0,1)/sqrt(fan_in).
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        if key.endswith(".gamma") or (key.endswith("norm.weight") or ".norm" in key) and len(shape) == 1:
            state[key] = 1.0 + 0.1 * noise
        elif key.endswith(".bias"):
            state[key] = 0.1 * noise
        else:
            state[key] = noise / math.sqrt(math.prod(shape[1:]))
    return state


def write_t5(path: Path, seed: int) -> Path:
    state = {k: v.to(torch.bfloat16) for k, v in random_state_from_manifest(T5_MANIFEST["shapes"], seed).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_tokenizer(path: Path) -> Path:
    from transformers import T5TokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    T5TokenizerFast(vocab_file=str(FIXTURES / "text" / "spiece.model"), extra_ids=0).save_pretrained(str(path))
    return path


def write_vae(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_state_from_manifest(VAE_MANIFEST["shapes"], seed), path)
    return path


def write_self_forcing_root(root: Path, model_cfg, generator_state: dict[str, torch.Tensor], seed: int = 0) -> Path:
    """A weights root laid out as deepforcing.model_files expects for kind ``self_forcing``, every file tiny."""
    from deepforcing.model_files import WeightsConfig

    w = WeightsConfig(root=root)
    cfg = {"_class_name": "WanModel", "model_type": "t2v", "dim": model_cfg.dim, "ffn_dim": model_cfg.ffn_dim,
           "freq_dim": model_cfg.freq_dim, "num_heads": model_cfg.num_heads, "num_layers": model_cfg.num_layers,
           "in_dim": model_cfg.in_dim, "out_dim": model_cfg.out_dim, "text_len": model_cfg.text_len,
           "text_dim": model_cfg.text_dim, "eps": model_cfg.eps}
    w.path("wan.config").parent.mkdir(parents=True, exist_ok=True)
    w.path("wan.config").write_text(json.dumps(cfg))
    gen = w.path("self_forcing.generator")
    gen.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"generator_ema": {f"model.{k}": v for k, v in generator_state.items()}}, gen)
    write_t5(w.path("wan.t5"), seed)
    write_tokenizer(w.path("wan.tokenizer"))
    write_vae(w.path("wan.vae"), seed + 1)
    return root


def random_model(cfg=None, seed: int = 0, std: float = 0.1) -> CausalWan:
    """A tiny backbone whose every parameter is random (so outputs depend on all weights)."""
    return random_init_(CausalWan(cfg or tiny()), seed, std).eval()
