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


@pytest.fixture
def published_prompts(tmp_path, monkeypatch):
    """The folder of the published prompt files: the development copies beside this repository when they
    are there (users fetch them: python -m eval.prompts fetch), else stand-ins of the published line counts
    whose checksums are registered in their place, so tests that read them run on any clone."""
    from pathlib import Path

    from deepforcing import prompts

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if all((shared / s.file).exists() for s in prompts.SETS.values()):
        return shared
    folder = tmp_path / "published"
    folder.mkdir()
    for name, s in prompts.SETS.items():
        data = "".join(f"a stand-in prompt {i} of {name}\n" for i in range(1003)).encode()
        (folder / s.file).write_bytes(data)
        monkeypatch.setitem(prompts.SETS, name, prompts.PromptSet(s.file, s.url, prompts._sha256(data), s.note))
    return folder
