import pytest
import torch
from tiny_files import random_model

from deepforcing.model import CausalWan

# The tiny test models are far faster on one thread (and CI machines have two cores).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model() -> CausalWan:
    return random_model()


@pytest.fixture(scope="session")
def tiny_text(tiny_model):
    torch.manual_seed(1)
    ctx = torch.randn(1, tiny_model.cfg.text_len, tiny_model.cfg.text_dim)
    ctx[:, -5:] = 0  # zeroed padding, as the text wrapper produces
    return tiny_model.text_state(ctx)


@pytest.fixture
def one_thread():
    """The tiny and toy models run many times faster on one CPU thread (as run.py sets for them)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
