"""Models built without random initialisation (``deepforcing.metrics.fastload``) against the reference
loaders: the same parameters and buffers (values, dtypes, shapes), hence the same outputs."""

from __future__ import annotations

import os

import pytest
import torch

from deepforcing.metrics.fastload import load_into, meta_params


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        assert torch.equal(sa[k], sb[k]), k
        assert not sa[k].is_meta
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.scale = torch.nn.Parameter(torch.randn(3))
        self.register_buffer("steps", torch.arange(3.0))
        self.register_buffer("table", torch.linspace(0, 1, 5), persistent=False)  # computed, not in checkpoints


def test_load_into_is_strict_and_keeps_computed_buffers():
    ref = _Net()
    sd = {k: v.half() if k == "scale" else v for k, v in ref.state_dict().items()}
    with meta_params():
        m = _Net()
    assert m.lin.weight.is_meta and not m.table.is_meta
    load_into(m, sd)
    assert m.scale.dtype == torch.float32 and torch.equal(m.scale, ref.scale.half().float())
    assert torch.equal(m.lin.weight, ref.lin.weight) and torch.equal(m.table, ref.table)
    with meta_params():
        m2 = _Net()
    with pytest.raises(RuntimeError, match="missing"):
        load_into(m2, {k: v for k, v in sd.items() if k != "lin.bias"})
    with meta_params():
        m3 = _Net()
    with pytest.raises(RuntimeError, match="unexpected"):
        load_into(m3, {**sd, "extra": torch.zeros(1)})
    assert not torch.nn.Linear(2, 2).weight.is_meta  # the patch is gone after the block


@pytest.mark.parametrize("key", ["clip_vit_b32", "clip_vit_l14"])
def test_clip_same_as_clip_load(key, random_weights):
    from deepforcing.metrics.dims.clip_dims import load_clip, load_clip_reference

    p = str(random_weights.path(key))
    fast = load_clip.__wrapped__(p, "cpu")
    ref = load_clip_reference(p, "cpu")
    same_state(fast, ref)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(fast.encode_image(x), ref.encode_image(x))
    assert not fast.training


def test_dino_timm_same_as_plain_construction(random_weights):
    from deepforcing.metrics.dims.subject import load_dino, load_dinov2

    p = str(random_weights.path("dino_vitb16"))
    same_state(load_dino.__wrapped__(p, None, "cpu"), load_dino.__wrapped__(p, None, "cpu", fast=False))
    from deepforcing.metrics.dims.subject import TimmDino

    p2 = str(random_weights.path("dinov2_vitb14"))
    sd = torch.load(p2, map_location="cpu")
    same_state(load_dinov2.__wrapped__(p2, "cpu"), TimmDino(sd, "vit_base_patch14_dinov2", fast=False))


HUBCONF = """
import timm

def dino_vitb16(pretrained=False, **kwargs):
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
"""


def dino_repo(tmp_path) -> str:
    """A torch.hub repository folder whose ``dino_vitb16`` entry builds a ViT-B/16 with DINO's parameter
    names (timm's), standing in for a facebookresearch/dino clone: ``DEEPFORCING_DINO_REPO`` when set,
    else this folder (the loading path under test is torch.hub's local source, not DINO's code)."""
    if os.environ.get("DEEPFORCING_DINO_REPO"):
        return os.environ["DEEPFORCING_DINO_REPO"]
    repo = tmp_path / "dino_hub"
    repo.mkdir()
    (repo / "hubconf.py").write_text(HUBCONF)
    return str(repo)


def test_dino_repo_same_as_plain_construction(random_weights, tmp_path):
    from deepforcing.metrics.dims.subject import load_dino

    p, repo = str(random_weights.path("dino_vitb16")), dino_repo(tmp_path)
    same_state(load_dino.__wrapped__(p, repo, "cpu"), load_dino.__wrapped__(p, repo, "cpu", fast=False))


@pytest.mark.slow
def test_viclip_same_as_vbench_construction(random_weights):
    from deepforcing.metrics.dims.overall import load_viclip, load_viclip_reference

    w, bpe = str(random_weights.path("viclip")), str(random_weights.path("viclip_bpe"))
    _, fast = load_viclip.__wrapped__(w, bpe, "cpu")
    _, ref = load_viclip_reference(w, bpe, "cpu")
    same_state(fast, ref)
    assert not fast.training and [p.requires_grad for p in fast.parameters()] == [
        p.requires_grad for p in ref.parameters()]


def test_musiq_same_as_pyiqa_construction(random_weights):
    from deepforcing.metrics.dims.imaging import load_musiq, load_musiq_reference

    p = str(random_weights.path("musiq_spaq"))
    fast = load_musiq.__wrapped__(p, "cpu")
    ref = load_musiq_reference(p, "cpu")
    same_state(fast, ref)
    x = torch.rand(1, 3, 96, 160)
    with torch.no_grad():
        assert torch.equal(fast(x), ref(x))
    assert not fast.training
    assert load_musiq(p, "cpu") is load_musiq(p, "cpu")  # kept loaded for the process
