import pytest
import torch

from deepforcing.model import CausalWan, tiny

# The tiny test models are far faster on one thread (and CI machines have two cores).
torch.set_num_threads(1)


def random_model(cfg=None, seed: int = 0, std: float = 0.1) -> CausalWan:
    """A tiny backbone whose every parameter is random (so outputs depend on all weights)."""
    torch.manual_seed(seed)
    model = CausalWan(cfg or tiny())
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model() -> CausalWan:
    return random_model()


@pytest.fixture(scope="session")
def tiny_text(tiny_model):
    torch.manual_seed(1)
    ctx = torch.randn(1, tiny_model.cfg.text_len, tiny_model.cfg.text_dim)
    ctx[:, -5:] = 0  # zeroed padding, as the text wrapper produces
    return tiny_model.text_state(ctx)
