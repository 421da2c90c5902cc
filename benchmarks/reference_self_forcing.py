"""Run guandeh17/Self-Forcing's own ``CausalInferencePipeline`` from a user-supplied checkout.

Nothing of the reference is in this repository: ``load(path)`` imports its modules from ``path``
(``git clone https://github.com/guandeh17/Self-Forcing``; the fixture tests/fixtures/self_forcing_tiny
was made at 33593df). Its files are not edited. What its pipeline hard-codes for Wan-1.3B is set from
our model config instead, the same changes the golden fixture records (tests/fixtures/self_forcing_tiny/
README.md), made here by subclassing and attribute assignment:

- ``num_transformer_blocks`` / ``frame_seq_length`` (30 / 1560) -> the config's layers / tokens per frame;
- the KV buffers ``[B, size, 12, 128]`` -> ``[B, size, heads, head_dim]`` (size as theirs:
  ``local_attn_size * frame_seq_length``, or 21 frames for a full cache); the cross-attention
  placeholders likewise (``text_len`` rows);
- each block's ``max_attention_size`` (``local_attn_size * 1560``) -> ``local_attn_size * frame_seq_length``;
- their ``attention`` helpers cast to bf16 (CPU SDPA) or need flash-attn (CUDA): both are replaced by
  plain SDPA in the input dtype, as our engine runs on CPU (``flash-attn`` is used as is when present on
  CUDA with bf16 weights);
- ``CausalWanModel.from_pretrained`` builds the model from our config (weights are copied in afterwards);
- the text encoder and the VAE are stubs (T5 and VAE are outside the measured path): the text encoder
  returns the given embeddings; the VAE returns the latents.

``torch.cuda.current_device`` is made to answer 0 before import on machines without CUDA, because two of
its modules build ``torch.device('cuda:N')`` objects at import time (never used on this path).
"""

from __future__ import annotations

import contextlib
import io
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from deepforcing.model import ModelConfig

REQUIRED = ("pipeline/causal_inference.py", "wan/modules/causal_model.py", "utils/wan_wrapper.py")


class ReferenceUnavailable(RuntimeError):
    pass


def _sdpa(q, k, v, *args, **kwargs):
    """Their ``attention(q, k, v, ...)`` ([B, L, H, D]) as plain SDPA in the input dtype (no mask, no
    k_lens: the inference path passes none)."""
    if kwargs.get("k_lens") is not None or kwargs.get("q_lens") is not None:
        raise NotImplementedError("length-masked attention is not on the measured path")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _wan_kwargs(cfg: ModelConfig) -> dict:
    return dict(model_type="t2v", patch_size=tuple(cfg.patch_size), text_len=cfg.text_len, in_dim=cfg.in_dim,
                dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
                out_dim=cfg.out_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers, qk_norm=True,
                cross_attn_norm=True, eps=cfg.eps)


def load(path: str | Path):
    """Import the reference from ``path``; returns a namespace with ``build(...)``."""
    root = Path(path).expanduser().resolve()
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    if missing:
        raise ReferenceUnavailable(f"{root} is not a Self-Forcing checkout (missing {', '.join(missing)}); "
                                   "clone https://github.com/guandeh17/Self-Forcing and pass its path")
    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0
    sys.path.insert(0, str(root))
    try:
        import wan.modules.causal_model as causal_model
        import wan.modules.model as wan_model
        from omegaconf import OmegaConf
        from pipeline.causal_inference import CausalInferencePipeline
    except ImportError as e:
        raise ReferenceUnavailable(f"importing the reference from {root} failed: {e}; install its requirements "
                                   "(diffusers, omegaconf, einops, easydict, ftfy, transformers)") from e
    use_flash = torch.cuda.is_available() and getattr(sys.modules.get("wan.modules.attention"),
                                                      "FLASH_ATTN_2_AVAILABLE", False)
    if not use_flash:
        causal_model.attention = _sdpa
        wan_model.flash_attention = _sdpa
    base_cfg = OmegaConf.merge(OmegaConf.load(root / "configs/default_config.yaml"),
                               OmegaConf.load(root / "configs/self_forcing_dmd.yaml"))

    def build(cfg: ModelConfig, state_dict: dict, window: int, sink: int, dtype: torch.dtype,
              device: torch.device, full_cache_frames: int = 21):
        """The reference pipeline for our ``cfg`` with our weights; ``window=-1``: full cache."""
        tpf = cfg.tokens_per_frame()
        heads, head_dim = cfg.num_heads, cfg.head_dim

        class Pipeline(CausalInferencePipeline):
            def _initialize_kv_cache(self, batch_size, dtype, device):
                size = self.local_attn_size * tpf if self.local_attn_size != -1 else full_cache_frames * tpf
                self.kv_cache1 = [{
                    "k": torch.zeros([batch_size, size, heads, head_dim], dtype=dtype, device=device),
                    "v": torch.zeros([batch_size, size, heads, head_dim], dtype=dtype, device=device),
                    "global_end_index": torch.tensor([0], dtype=torch.long, device=device),
                    "local_end_index": torch.tensor([0], dtype=torch.long, device=device),
                } for _ in range(self.num_transformer_blocks)]

            def _initialize_crossattn_cache(self, batch_size, dtype, device):
                self.crossattn_cache = [{
                    "k": torch.zeros([batch_size, cfg.text_len, heads, head_dim], dtype=dtype, device=device),
                    "v": torch.zeros([batch_size, cfg.text_len, heads, head_dim], dtype=dtype, device=device),
                    "is_init": False,
                } for _ in range(self.num_transformer_blocks)]

        model_cls = causal_model.CausalWanModel
        had_own = "from_pretrained" in model_cls.__dict__
        original = model_cls.__dict__.get("from_pretrained")
        model_cls.from_pretrained = classmethod(lambda cls, *_a, **kw: cls(**_wan_kwargs(cfg), **kw))
        try:
            args = OmegaConf.merge(base_cfg, {"model_kwargs": {"local_attn_size": window, "sink_size": sink}})
            text_stub, vae_stub = _TextStub(), _VaeStub()
            with contextlib.redirect_stdout(io.StringIO()):
                pipe = Pipeline(args, device=device, text_encoder=text_stub, vae=vae_stub)
        finally:
            if had_own:
                model_cls.from_pretrained = original
            else:
                del model_cls.from_pretrained
        pipe.num_transformer_blocks, pipe.frame_seq_length = cfg.num_layers, tpf
        for block in pipe.generator.model.blocks:
            block.self_attn.max_attention_size = (window if window != -1 else full_cache_frames) * tpf
        missing, unexpected = pipe.generator.model.load_state_dict(state_dict, strict=False)
        if missing or unexpected:
            raise ReferenceUnavailable(f"weights do not map onto the reference model: missing {missing[:4]}, "
                                       f"unexpected {unexpected[:4]}")
        pipe.generator.to(device=device, dtype=dtype).eval()
        return pipe

    return types.SimpleNamespace(build=build, root=root)


class _TextStub(torch.nn.Module):
    """Stands in for T5: ``forward(text_prompts)`` returns the embeddings set in ``embeds``."""

    embeds: torch.Tensor | None = None

    def forward(self, text_prompts):
        return {"prompt_embeds": self.embeds.clone()}


class _VaeStub(torch.nn.Module):
    def decode_to_pixel(self, latents, use_cache=False):
        return latents


def run(pipe, noise: torch.Tensor, text: torch.Tensor, on_call=None) -> torch.Tensor:
    """The reference's ``inference`` on ``noise [B, F, C, H, W]`` and text embeddings; ``on_call()`` runs
    after every generator call (4 denoising steps and one clean pass per chunk). Returns its latents."""
    pipe.text_encoder.embeds = text
    if on_call is not None:
        gen_forward = pipe.generator.forward

        def timed(*a, **kw):
            out = gen_forward(*a, **kw)
            on_call()
            return out

        pipe.generator.forward = timed
    pipe.kv_cache1 = None
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        _, latents = pipe.inference(noise=noise, text_prompts=[""] * noise.shape[0], return_latents=True)
    if on_call is not None:
        del pipe.generator.forward
    return latents


def kv_bytes(pipe) -> int:
    """Bytes of the reference's self-attention K/V buffers (all layers)."""
    return sum(c[n].numel() * c[n].element_size() for c in pipe.kv_cache1 for n in ("k", "v"))
