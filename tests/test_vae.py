"""VAE decoders: Wan's checkpoint format via diffusers vs Wan's reference code, streaming, the stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_files import random_state_from_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "vae"
#: pixels in [-1, 1] after ~40 convolutions of weights drawn here with randn: CPU kernels (AVX2 / AVX-512 /
#: default) round differently (1.0e-5 seen with ATEN_CPU_CAPABILITY=default); a wrong key map or layer is O(0.1)
PIXEL_TOL = 5e-5
MANIFEST = json.loads((FIXTURES / "wan_vae_tiny_manifest.json").read_text())
WEIGHT_SEED = 4321
LATENT_SEED = 99
GOLDEN_LATENT_SHAPE = (1, 4, 16, 2, 3)  # [B, F, C, h, w]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """The tiny convolutions run faster on one thread than split over busy cores; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / "wan_vae_golden.safetensors"))


@pytest.fixture(scope="module")
def wan_vae_file(tmp_path_factory) -> Path:
    """Tiny Wan2.1 VAE with random weights, saved as Wan's float32 .pth with Wan's key names."""
    path = tmp_path_factory.mktemp("vae") / "Wan2.1_VAE.pth"
    torch.save(random_state_from_manifest(MANIFEST["shapes"], WEIGHT_SEED), path)
    return path


@pytest.fixture(scope="module")
def wan_vae(wan_vae_file):
    from deepforcing.vae import WanVAE

    return WanVAE(wan_vae_file)


def test_wan_checkpoint_decode_matches_reference(wan_vae, golden):
    from deepforcing.vae import VAE

    assert isinstance(wan_vae, VAE)
    assert wan_vae.latent_channels == MANIFEST["config"]["z_dim"] and wan_vae.stride == (4, 8, 8)
    latents = golden["latents"]
    out = wan_vae.decode(latents, output="signed")
    b, f, _, h, w = latents.shape
    assert out.shape == (b, 4 * f - 3, 3, 8 * h, 8 * w)
    assert 0 < (out.abs() < 1).float().mean() and out.std() > 0.1  # not saturated or constant
    torch.testing.assert_close(out, golden["pixels"], atol=PIXEL_TOL, rtol=0)


def test_key_map_agrees_with_diffusers_single_file_converter():
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from deepforcing.vae import wan_vae_to_diffusers

    state = {k: torch.zeros(1) for k in MANIFEST["shapes"]}
    converted = convert_wan_vae_to_diffusers(state)
    # The converter renames in place: pair names by tensor identity.
    by_tensor = {id(v): k for k, v in converted.items()}
    for key, value in state.items():
        assert wan_vae_to_diffusers(key) == by_tensor[id(value)], key


def test_streaming_decode_equals_one_shot(wan_vae):
    from deepforcing.vae import decode_in_chunks

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 7, 16, 2, 3, generator=gen)
    one_shot = wan_vae.decode(latents, output="signed")
    assert one_shot.shape[1] == 4 * 7 - 3
    for sizes in ([3, 3, 1], [1] * 7, [4, 3]):
        stream, chunks, start = wan_vae.stream("signed"), [], 0
        for n in sizes:
            chunks.append(stream.push(latents[:, start : start + n]))
            start += n
        assert [c.shape[1] for c in chunks] == [4 * sizes[0] - 3] + [4 * n for n in sizes[1:]]
        assert torch.equal(torch.cat(chunks, dim=1), one_shot)
        assert (stream.latent_frames, stream.pixel_frames) == (7, 25)
    assert torch.equal(torch.cat(list(decode_in_chunks(wan_vae, latents, 3, "signed")), dim=1), one_shot)


def test_decode_equals_diffusers_one_shot_decode_per_sample(wan_vae):
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 5, 16, 2, 3, generator=gen)
    ours = wan_vae.decode(latents, output="signed")
    channel = (1, 16, 1, 1, 1)
    z = latents.permute(0, 2, 1, 3, 4)
    # Wan's arithmetic, z / (1 / std) + mean (z * std + mean differs in the last bit).
    z = z / (1.0 / torch.tensor(WAN_STD)).view(channel) + torch.tensor(WAN_MEAN).view(channel)
    with torch.no_grad():
        theirs = torch.cat([wan_vae.model.decode(z[i : i + 1]).sample for i in range(2)]).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


# Wan's published latent statistics, spelled out again so the normalisation is checked independently.
WAN_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                 0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]


def test_pixel_formats(wan_vae, golden):
    latents = golden["latents"]
    signed = wan_vae.decode(latents, output="signed")
    unit = wan_vae.decode(latents, output="float")
    u8 = wan_vae.decode(latents, output="uint8")
    assert signed.min() >= -1 and signed.max() <= 1 and unit.min() >= 0 and unit.max() <= 1
    torch.testing.assert_close(unit, signed * 0.5 + 0.5, atol=0, rtol=0)
    assert u8.dtype == torch.uint8 and torch.equal(u8, torch.floor(unit * 255).to(torch.uint8))
    from deepforcing.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown pixel format"):
        wan_vae.stream("png")


def test_diffusers_vae_folder_decodes_the_same(wan_vae, golden, tmp_path):
    from deepforcing.vae import WanVAE

    wan_vae.model.save_pretrained(str(tmp_path / "vae"))
    folder = WanVAE(tmp_path / "vae")
    torch.testing.assert_close(folder.decode(golden["latents"], "signed"), golden["pixels"], atol=PIXEL_TOL,
                               rtol=0)


def test_bad_checkpoints_and_chunks_raise_clear_errors(wan_vae, wan_vae_file, tmp_path):
    from deepforcing.errors import ConfigError, WeightsError
    from deepforcing.vae import WanVAE

    with pytest.raises(WeightsError, match="not found"):
        WanVAE(tmp_path / "absent.pth")
    other = tmp_path / "t5.pth"
    torch.save({"token_embedding.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="not Wan's VAE checkpoint"):
        WanVAE(other)
    with pytest.raises(WeightsError, match="num_res_blocks=1"):
        WanVAE(wan_vae_file, num_res_blocks=1)
    stream = wan_vae.stream()
    with pytest.raises(ConfigError, match=r"expected \[B, F, 16, h, w\]"):
        stream.push(torch.zeros(1, 16, 3, 2, 3))  # channels before frames
    stream.push(torch.zeros(1, 1, 16, 2, 3))
    with pytest.raises(ConfigError, match="start a new stream"):
        stream.push(torch.zeros(2, 1, 16, 2, 3))


# ----------------------------------------------------------------------------------------------
# Weight-free stand-in


def test_tiny_vae_frame_rule_streaming_and_determinism():
    from deepforcing.model import tiny
    from deepforcing.vae import VAE, TinyVAE, decode_in_chunks

    cfg = tiny()
    vae = TinyVAE.from_config(cfg)
    assert isinstance(vae, VAE) and vae.stride == cfg.vae_stride and vae.latent_channels == cfg.in_dim
    gen = torch.Generator().manual_seed(0)
    h, w = cfg.latent_hw
    latents = torch.randn(2, 7, cfg.in_dim, h, w, generator=gen)
    one_shot = vae.decode(latents)
    st, sh, sw = cfg.vae_stride
    assert one_shot.shape == (2, st * 6 + 1, 3, sh * h, sw * w)
    assert one_shot.min() >= 0 and one_shot.max() <= 1 and one_shot.std() > 0.05
    assert torch.equal(torch.cat(list(decode_in_chunks(vae, latents, 3)), dim=1), one_shot)
    assert torch.equal(TinyVAE.from_config(cfg).decode(latents), one_shot)
    assert not torch.equal(TinyVAE.from_config(cfg, seed=1).decode(latents), one_shot)
    # Pixel frame st*k is latent frame k's own image; the frames between blend from k-1 to k.
    per_latent = vae.decode(latents[:, 3:4])
    assert torch.equal(one_shot[:, st * 3], per_latent[:, 0])
    assert not torch.equal(one_shot[:, st * 3 - 1], one_shot[:, st * 3])


def test_vae_for_picks_the_stand_in_and_checks_the_backbone(wan_vae_file):
    from dataclasses import replace

    from deepforcing.errors import ConfigError
    from deepforcing.model import tiny
    from deepforcing.vae import TinyVAE, WanVAE, vae_for

    cfg = tiny()
    assert isinstance(vae_for(cfg), TinyVAE)
    assert isinstance(vae_for(cfg, wan_vae_file), WanVAE)
    with pytest.raises(ConfigError, match="does not match the backbone"):
        vae_for(replace(cfg, vae_stride=(4, 16, 16)), wan_vae_file)
