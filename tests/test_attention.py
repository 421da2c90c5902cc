"""Key-importance scores against an explicitly materialised attention matrix."""

import pytest
import torch

from deepforcing.attention import key_importance


@pytest.fixture
def qk():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 37, 3, 8, generator=g)
    k = torch.randn(2, 23, 3, 8, generator=g)
    extra = torch.randn(2, 5, 3, 8, generator=g)
    return q, k, extra


def logits(q, k):
    return torch.einsum("bmhd,bnhd->bhmn", q, k)  # [B, H, M, N]


def test_dot_sum_is_summed_logits(qk):
    q, k, _ = qk
    full = logits(q, k)
    assert torch.allclose(key_importance(q, k, heads="none"), full.sum(2), atol=1e-4)
    assert torch.allclose(key_importance(q, k), full.sum(2).sum(1), atol=1e-4)


def test_dot_max_in_blocks(qk):
    q, k, _ = qk
    got = key_importance(q, k, fuse="max", heads="none", block=8)
    assert torch.allclose(got, logits(q, k).amax(2), atol=1e-5)


@pytest.mark.parametrize("block", [4, 1024])
def test_softmax_normalises_over_all_attended_keys(qk, block):
    q, k, extra = qk
    scale = q.shape[-1] ** -0.5
    probs = torch.softmax(logits(q, torch.cat([k, extra], 1)) * scale, dim=-1)[..., : k.shape[1]]
    got = key_importance(q, k, mode="softmax", extra_keys=extra, heads="none", block=block)
    assert torch.allclose(got, probs.sum(2), atol=1e-5)
    # without extra keys, the probabilities over k sum to one per query
    total = key_importance(q, k, mode="softmax", heads="none", block=block).sum(-1)
    assert torch.allclose(total, torch.full_like(total, q.shape[1]), atol=1e-4)
