"""Latents -> pixels, decoded chunk by chunk.

Two decoders share the :class:`VAE` protocol:

- :class:`WanVAE`: the Wan2.1 causal 3-D VAE decoder run with diffusers' ``AutoencoderKLWan``. It
  loads Wan's own ``Wan2.1_VAE.pth`` (Wan's module names, mapped by :func:`wan_vae_to_diffusers`) or
  a diffusers ``vae/`` folder.
- :class:`TinyVAE`: weight-free and deterministic, with the same frame rule and streaming API; for the
  tiny default run and tests.

Latents are ``[B, F, C, h, w]`` (the layout the backbone produces), normalised per channel as the
backbone sees them: ``z_norm = (z - mean) / std`` with Wan's 16 published constants. Decoding
un-normalises, decodes, clamps to [-1, 1] and returns ``[B, T, 3, H, W]`` with ``T = 4F - 3``
(the first latent frame holds one pixel frame, every later one holds four), ``H = 8h``, ``W = 8w``.

Wan's decoder is causal in time: each latent frame is decoded on its own, and every causal
convolution keeps its last two input frames as a cache for the next call. :class:`StreamingDecoder`
keeps those caches between :meth:`StreamingDecoder.push` calls, so a long video is decoded a few
latent frames at a time, never holding all pixel frames at once, with the same float32 numbers as a
one-shot decode.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch

from deepforcing.checkpoints import torch_load
from deepforcing.errors import ConfigError, WeightsError

# Per-channel latent statistics of the Wan2.1 VAE, as published in Wan's ``wan/modules/vae.py`` and
# Self-Forcing's ``utils/wan_wrapper.py::WanVAEWrapper`` (also diffusers' ``latents_mean/std``).
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
# Wan2.1 VAE structure (``_video_vae``): channel multipliers per stage, residual blocks per stage,
# temporal downsampling per stage transition (the decoder upsamples in reverse order).
WAN21_DIM_MULT = (1, 2, 4, 4)
WAN21_NUM_RES_BLOCKS = 2
WAN21_TEMPORAL_DOWNSAMPLE = (False, True, True)
RGB = 3

PixelFormat = Literal["float", "uint8", "signed"]
PIXEL_FORMATS = ("float", "uint8", "signed")
UINT8_MAX = 255


def pixel_frames(latent_frames: int, temporal_stride: int) -> int:
    """Pixel frames decoded from ``latent_frames``: 1 for the first, ``temporal_stride`` for each later one."""
    return 0 if latent_frames <= 0 else 1 + temporal_stride * (latent_frames - 1)


def to_pixels(signed: torch.Tensor, output: PixelFormat) -> torch.Tensor:
    """Map decoder output in [-1, 1] to the requested format.

    ``float``: [0, 1] as ``x * 0.5 + 0.5`` (the Self-Forcing pipeline). ``uint8``: ``floor(255 * float)``,
    the truncating cast the reference video writer applies. ``signed``: unchanged.
    """
    if output == "signed":
        return signed
    unit = (signed.float() * 0.5 + 0.5).clamp(0, 1)
    if output == "float":
        return unit
    if output == "uint8":
        return (unit * UINT8_MAX).to(torch.uint8)
    raise ConfigError(f"unknown pixel format {output!r}: use one of {', '.join(PIXEL_FORMATS)}")


class StreamingDecoder:
    """Decode latent chunks in order, keeping the decoder's temporal state between chunks.

    ``push(chunk)`` takes ``[B, F, C, h, w]`` latent frames that follow the previous chunk and returns
    their pixel frames ``[B, T, 3, H, W]``. Concatenating all returned frames equals decoding all
    latents at once. Subclasses implement :meth:`_decode` on un-chunked frames.
    """

    def __init__(self, vae: VAE, output: PixelFormat = "float"):
        if output not in PIXEL_FORMATS:
            raise ConfigError(f"unknown pixel format {output!r}: use one of {', '.join(PIXEL_FORMATS)}")
        self.vae, self.output = vae, output
        self.latent_frames = 0
        self.pixel_frames = 0
        self._shape: tuple[int, int, int] | None = None  # batch, h, w of the stream

    def push(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.ndim != 5 or latents.shape[2] != self.vae.latent_channels:
            raise ConfigError(
                f"latent chunk of shape {tuple(latents.shape)}: expected [B, F, {self.vae.latent_channels}, h, w] "
                "(frames before channels, as the backbone produces them)"
            )
        b, f, _, h, w = latents.shape
        if self._shape is None:
            self._shape = (b, h, w)
        elif self._shape != (b, h, w):
            raise ConfigError(
                f"latent chunk batch/size {(b, h, w)} differs from the stream's {self._shape}: "
                "start a new stream for another video"
            )
        if f == 0:
            _, sh, sw = self.vae.stride
            return to_pixels(latents.new_zeros(b, 0, RGB, h * sh, w * sw), self.output)
        with torch.no_grad():
            signed = self._decode(latents)
        expected = pixel_frames(self.latent_frames + f, self.vae.stride[0]) - self.pixel_frames
        assert signed.shape[1] == expected, (signed.shape, expected)
        self.latent_frames += f
        self.pixel_frames += expected
        return to_pixels(signed, self.output)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@runtime_checkable
class VAE(Protocol):
    """A latent decoder: ``stream()`` for chunked decoding, ``decode()`` for all frames at once."""

    latent_channels: int
    stride: tuple[int, int, int]

    def stream(self, output: PixelFormat = "float") -> StreamingDecoder: ...

    def decode(self, latents: torch.Tensor, output: PixelFormat = "float") -> torch.Tensor: ...


def decode_in_chunks(
    vae: VAE, latents: torch.Tensor, chunk_frames: int, output: PixelFormat = "float"
) -> Iterator[torch.Tensor]:
    """Yield the pixel frames of ``latents`` [B, F, C, h, w], ``chunk_frames`` latent frames at a time."""
    if chunk_frames <= 0:
        raise ConfigError(f"chunk_frames must be positive, got {chunk_frames}")
    stream = vae.stream(output)
    for start in range(0, latents.shape[1], chunk_frames):
        yield stream.push(latents[:, start : start + chunk_frames])


# ----------------------------------------------------------------------------------------------
# Wan2.1 VAE


def wan_vae_to_diffusers(key: str, num_res_blocks: int = WAN21_NUM_RES_BLOCKS) -> str:
    """Map one key of Wan's ``Wan2.1_VAE.pth`` to diffusers' ``AutoencoderKLWan`` name.

    Wan keeps flat ``nn.Sequential`` lists where diffusers has named sub-modules:

    - top level ``conv1`` / ``conv2`` (the 1x1x1 convs around the latent) -> ``quant_conv`` /
      ``post_quant_conv``; ``{encoder,decoder}.conv1`` -> ``conv_in``;
    - ``head.0`` (RMS norm) / ``head.2`` (conv) -> ``norm_out`` / ``conv_out``;
    - ``middle.0`` / ``middle.1`` / ``middle.2`` -> ``mid_block.resnets.0`` / ``mid_block.attentions.0`` /
      ``mid_block.resnets.1``;
    - ``encoder.downsamples.k`` -> ``encoder.down_blocks.k`` (same flat list);
    - ``decoder.upsamples.k`` -> ``decoder.up_blocks.s.resnets.j`` or ``decoder.up_blocks.s.upsamplers.0``:
      each decoder stage is ``num_res_blocks + 1`` residual blocks followed by one resample;
    - inside a residual block ``residual.0`` / ``.2`` / ``.3`` / ``.6`` (norm, conv, norm, conv; SiLU and
      dropout hold no weights) -> ``norm1`` / ``conv1`` / ``norm2`` / ``conv2``, ``shortcut`` ->
      ``conv_shortcut``. Resample (``resample.1``, ``time_conv``) and attention (``norm``, ``to_qkv``,
      ``proj``) names are the same in both.
    """
    parts = key.split(".")
    if parts[0] in ("conv1", "conv2") and len(parts) == 2:
        return {"conv1": "quant_conv", "conv2": "post_quant_conv"}[parts[0]] + "." + parts[1]
    if parts[0] not in ("encoder", "decoder") or len(parts) < 3:
        raise WeightsError(f"unexpected key {key!r} in a Wan VAE checkpoint")
    side, head, rest = parts[0], parts[1], parts[2:]
    if head == "conv1":
        return ".".join([side, "conv_in", *rest])
    if head == "head":
        return ".".join([side, {"0": "norm_out", "2": "conv_out"}[rest[0]], *rest[1:]])
    if head == "middle":
        target = {"0": "mid_block.resnets.0", "1": "mid_block.attentions.0", "2": "mid_block.resnets.1"}[rest[0]]
        return ".".join([side, target, *_residual_names(rest[1:])])
    if head == "downsamples" and side == "encoder":
        return ".".join([side, "down_blocks", rest[0], *_residual_names(rest[1:])])
    if head == "upsamples" and side == "decoder":
        per_stage = num_res_blocks + 2  # residual blocks + the resample
        stage, j = divmod(int(rest[0]), per_stage)
        block = "upsamplers.0" if j == num_res_blocks + 1 else f"resnets.{j}"
        return ".".join([side, "up_blocks", str(stage), block, *_residual_names(rest[1:])])
    raise WeightsError(f"unexpected key {key!r} in a Wan VAE checkpoint")


def _residual_names(rest: list[str]) -> list[str]:
    """Inner names of a residual block (Wan -> diffusers); other modules pass through."""
    residual = {"0": "norm1", "2": "conv1", "3": "norm2", "6": "conv2"}
    if rest and rest[0] == "residual":
        return [residual[rest[1]], *rest[2:]]
    if rest and rest[0] == "shortcut":
        return ["conv_shortcut", *rest[1:]]
    return rest


class WanVAE:
    """Wan2.1 VAE decoder (diffusers ``AutoencoderKLWan``) from ``Wan2.1_VAE.pth`` or a diffusers ``vae/`` folder.

    For a ``.pth`` the base width and latent channels are read from the tensor shapes; the stage
    layout (``dim_mult``, ``num_res_blocks``, ``temporal_downsample``) defaults to Wan2.1's and is
    checked by a strict load.
    """

    def __init__(
        self,
        weights: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        dim_mult: tuple[int, ...] = WAN21_DIM_MULT,
        num_res_blocks: int = WAN21_NUM_RES_BLOCKS,
        temporal_downsample: tuple[bool, ...] = WAN21_TEMPORAL_DOWNSAMPLE,
    ):
        from diffusers import AutoencoderKLWan

        path = Path(weights)
        if not path.exists():
            raise WeightsError(
                f"{path}: not found. Pass Wan's Wan2.1_VAE.pth or a diffusers vae/ folder "
                "(weights are never downloaded)"
            )
        self.weights, self.dtype, self.device = path, dtype, torch.device(device)
        mean, std = WAN21_LATENT_MEAN, WAN21_LATENT_STD
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise WeightsError(f"{path}: a diffusers vae/ folder needs a config.json")
            model = AutoencoderKLWan.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
            if getattr(model.config, "is_residual", False) or getattr(model.config, "patch_size", None):
                raise WeightsError(f"{path}: this is a Wan2.2-style VAE; only the Wan2.1 VAE is supported")
            mean = tuple(model.config.latents_mean)
            std = tuple(model.config.latents_std)
        else:
            model = self._load_pth(path, dim_mult, num_res_blocks, temporal_downsample)
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        cfg = self.model.config
        self.latent_channels = int(cfg.z_dim)
        if len(mean) != self.latent_channels or len(std) != self.latent_channels:
            raise WeightsError(
                f"{path}: {len(mean)} latent means / {len(std)} stds for {self.latent_channels} latent channels"
            )
        self.latent_mean = torch.tensor(mean, dtype=dtype, device=self.device)
        self.latent_inv_std = 1.0 / torch.tensor(std, dtype=dtype, device=self.device)
        self.stride = (
            2 ** sum(bool(t) for t in cfg.temperal_downsample),
            2 ** (len(cfg.dim_mult) - 1),
            2 ** (len(cfg.dim_mult) - 1),
        )
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

        self.num_causal_convs = sum(isinstance(m, WanCausalConv3d) for m in self.model.decoder.modules())

    @staticmethod
    def _load_pth(path: Path, dim_mult, num_res_blocks, temporal_downsample):
        from diffusers import AutoencoderKLWan

        try:
            state = torch_load(path)
        except Exception as e:  # noqa: BLE001 - re-raised with what to do
            raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({e}); expected Wan2.1_VAE.pth") from e
        for key in ("encoder.conv1.weight", "conv2.weight"):
            if key not in state:
                raise WeightsError(f"{path}: key {key!r} missing: this is not Wan's VAE checkpoint (Wan2.1_VAE.pth)")
        model = AutoencoderKLWan(
            base_dim=int(state["encoder.conv1.weight"].shape[0]),
            z_dim=int(state["conv2.weight"].shape[0]),
            dim_mult=list(dim_mult),
            num_res_blocks=num_res_blocks,
            attn_scales=[],
            temperal_downsample=list(temporal_downsample),
        )
        mapped = {wan_vae_to_diffusers(k, num_res_blocks): v for k, v in state.items()}
        try:
            model.load_state_dict(mapped, strict=True)
        except RuntimeError as e:
            raise WeightsError(
                f"{path}: does not match a Wan2.1 VAE with dim_mult={tuple(dim_mult)}, "
                f"num_res_blocks={num_res_blocks}, temporal_downsample={tuple(temporal_downsample)}: {e}"
            ) from e
        return model

    def stream(self, output: PixelFormat = "float") -> StreamingDecoder:
        return _WanStream(self, output)

    def decode(self, latents: torch.Tensor, output: PixelFormat = "float") -> torch.Tensor:
        return self.stream(output).push(latents)


class _WanStream(StreamingDecoder):
    """Wan decoding as the reference runs it: one sample at a time (Self-Forcing's wrapper loops over
    the batch), one latent frame at a time, each causal conv reading its cache of earlier frames.

    Per sample and per frame, the arithmetic does not depend on how the stream is chunked. The
    1x1x1 ``post_quant_conv`` is applied per frame as the linear map over channels it is.
    """

    vae: WanVAE

    def __init__(self, vae: WanVAE, output: PixelFormat):
        super().__init__(vae, output)
        self._feat_caches: list[list] = []  # one list of causal-conv caches per sample

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        if not self._feat_caches:
            self._feat_caches = [[None] * vae.num_causal_convs for _ in range(latents.shape[0])]
        conv = vae.model.post_quant_conv
        weight, bias = conv.weight.flatten(1), conv.bias  # [C, C, 1, 1, 1] -> [C, C]
        z = latents.to(device=vae.device, dtype=vae.dtype)  # [B, F, C, h, w]
        # Wan's arithmetic for un-normalising: z / (1 / std) + mean.
        z = z / vae.latent_inv_std.view(1, 1, -1, 1, 1) + vae.latent_mean.view(1, 1, -1, 1, 1)
        videos = []
        for sample, cache in zip(z, self._feat_caches, strict=True):
            frames = []
            for i, frame in enumerate(sample):  # frame: [C, h, w]
                x = torch.nn.functional.linear(frame.permute(1, 2, 0), weight, bias)  # [h, w, C]
                x = x.permute(2, 0, 1)[None, :, None]  # [1, C, 1, h, w]
                first = self.latent_frames == 0 and i == 0
                frames.append(vae.model.decoder(x, feat_cache=cache, feat_idx=[0], first_chunk=first))
            videos.append(torch.cat(frames, dim=2)[0])  # [3, T, H, W]
        return torch.stack(videos).clamp(-1, 1).permute(0, 2, 1, 3, 4)  # [B, T, 3, H, W]


# ----------------------------------------------------------------------------------------------
# Weight-free stand-in


class TinyVAE:
    """A deterministic, weight-free decoder with Wan's frame rule and streaming API.

    Each latent frame is projected to RGB by a fixed seeded 1x1 map (clamped to [-1, 1]); the first
    latent frame gives one pixel frame, each later one gives ``stride[0]`` frames blending linearly from
    the previous latent frame's image to its own (so the stream carries state, as Wan's does); frames
    are upsampled by nearest neighbour by ``stride[1:]``.
    """

    def __init__(self, latent_channels: int = 16, stride: tuple[int, int, int] = (4, 8, 8), seed: int = 0):
        if latent_channels <= 0 or min(stride) <= 0:
            raise ConfigError(f"latent_channels and stride must be positive, got {latent_channels}, {stride}")
        self.latent_channels, self.stride, self.seed = latent_channels, tuple(stride), seed
        gen = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(RGB, latent_channels, generator=gen) / latent_channels**0.5

    @classmethod
    def from_config(cls, cfg, seed: int = 0) -> TinyVAE:
        """From a backbone ``ModelConfig``: its latent channels and VAE stride."""
        return cls(cfg.in_dim, tuple(cfg.vae_stride), seed)

    def stream(self, output: PixelFormat = "float") -> StreamingDecoder:
        return _TinyStream(self, output)

    def decode(self, latents: torch.Tensor, output: PixelFormat = "float") -> torch.Tensor:
        return self.stream(output).push(latents)


class _TinyStream(StreamingDecoder):
    vae: TinyVAE

    def __init__(self, vae: TinyVAE, output: PixelFormat):
        super().__init__(vae, output)
        self._previous: torch.Tensor | None = None

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.vae.stride
        rgb = torch.einsum("oc,bfchw->bfohw", self.vae.projection, latents.float()).clamp(-1, 1)
        frames = []
        for i in range(rgb.shape[1]):
            current = rgb[:, i]
            if self._previous is None:
                frames.append(current)
            else:
                for j in range(1, st + 1):
                    frames.append(torch.lerp(self._previous, current, j / st))
            self._previous = current
        out = torch.stack(frames, dim=1)
        return out.repeat_interleave(sh, dim=3).repeat_interleave(sw, dim=4)


def vae_for(cfg, weights: str | Path | None = None, **wan_kwargs) -> VAE:
    """The decoder a run asks for: :class:`WanVAE` when ``weights`` is given, else :class:`TinyVAE`.

    ``cfg`` is the backbone's ``ModelConfig``; the VAE's latent channels and stride must match it.
    """
    if weights is None:
        return TinyVAE.from_config(cfg)
    vae = WanVAE(weights, **wan_kwargs)
    if vae.latent_channels != cfg.in_dim or tuple(vae.stride) != tuple(cfg.vae_stride):
        raise ConfigError(
            f"{weights}: VAE with {vae.latent_channels} latent channels and stride {vae.stride} does not match "
            f"the backbone ({cfg.in_dim} channels, vae_stride {tuple(cfg.vae_stride)})"
        )
    return vae
