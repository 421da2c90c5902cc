"""The toy world's fixed codec: space-to-depth plus a fixed orthogonal projection, in place of a VAE.

``encode`` maps RGB frames in [-1, 1] (``[B, T, 3, H, W]``) to latents ``[B, T, C, H/s, W/s]`` with
``C = 3 s^2``: each ``s x s`` block of pixels becomes one latent position whose ``3 s^2`` values are
rotated by a fixed orthogonal matrix (seeded QR); ``decode`` applies the transpose and puts the
pixels back. Nothing is learned and no information is lost (``decode(encode(x)) == x`` up to float
rounding). Time is not compressed: one latent frame is one pixel frame.

:class:`ToyCodec` has the :class:`~deepforcing.vae.VAE` interface (``stream()`` / ``decode()``,
``latent_channels``, ``stride``), so the pipeline's streamed decode, store and metrics run unchanged.
"""

from __future__ import annotations

import torch

from deepforcing.errors import ConfigError
from deepforcing.vae import RGB, PixelFormat, StreamingDecoder

DEFAULT_SEED = 0


def orthogonal(n: int, seed: int) -> torch.Tensor:
    """A fixed ``n x n`` orthogonal matrix (float64), the same on every machine for a seed."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))[None, :]  # unique: positive diagonal of R


class ToyCodec:
    """Space-to-depth by ``block`` and a fixed orthogonal channel rotation."""

    def __init__(self, block: int = 2, seed: int = DEFAULT_SEED):
        if block <= 0:
            raise ConfigError(f"codec block must be positive, got {block}")
        self.block, self.seed = block, seed
        self.latent_channels = RGB * block * block
        self.stride = (1, block, block)
        self.rotation = orthogonal(self.latent_channels, seed).float()  # latent = rotation @ block values

    @classmethod
    def from_config(cls, cfg, seed: int = DEFAULT_SEED) -> ToyCodec:
        """The codec of a backbone ``ModelConfig`` (its spatial VAE stride and latent channels)."""
        st, sh, sw = cfg.vae_stride
        if st != 1 or sh != sw or RGB * sh * sw != cfg.in_dim:
            raise ConfigError(f"model config {cfg.name!r} (vae_stride {cfg.vae_stride}, {cfg.in_dim} latent channels) "
                              "is not a toy codec geometry: vae_stride (1, s, s) with 3*s*s channels")
        return cls(sh, seed)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` in [-1, 1] -> latents ``[B, T, C, H/s, W/s]``."""
        b, t, c, h, w = pixels.shape
        s = self.block
        if c != RGB or h % s or w % s:
            raise ConfigError(f"frames of shape {tuple(pixels.shape)}: expected [B, T, 3, H, W], H and W "
                              f"multiples of {s}")
        x = pixels.float().reshape(b, t, c, h // s, s, w // s, s).permute(0, 1, 2, 4, 6, 3, 5)
        x = x.reshape(b, t, c * s * s, h // s, w // s)
        return torch.einsum("oc,btchw->btohw", self.rotation, x)

    def decode_signed(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels in [-1, 1] (clamped), ``[B, T, 3, H, W]``."""
        b, t, _, h, w = latents.shape
        s = self.block
        x = torch.einsum("oc,btohw->btchw", self.rotation, latents.float())
        x = x.reshape(b, t, RGB, s, s, h, w).permute(0, 1, 2, 5, 3, 6, 4).reshape(b, t, RGB, h * s, w * s)
        return x.clamp(-1, 1)

    def stream(self, output: PixelFormat = "float") -> StreamingDecoder:
        return _ToyStream(self, output)

    def decode(self, latents: torch.Tensor, output: PixelFormat = "float") -> torch.Tensor:
        return self.stream(output).push(latents)


class _ToyStream(StreamingDecoder):
    vae: ToyCodec

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode_signed(latents)


def frames_to_signed(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float ``[..., 3, H, W]`` in [-1, 1]."""
    return frames_uint8.float().div(127.5).sub(1.0).movedim(-1, -3)
