"""benchmarks/reference_self_forcing.py: a path that is not a Self-Forcing checkout fails with a clear
error, before anything is imported from it (the reference itself is never part of this repository)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_self_forcing.py"


@pytest.fixture(scope="module")
def loader():
    spec = importlib.util.spec_from_file_location("reference_self_forcing", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_path_without_the_reference_fails_clearly(loader, tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "causal_inference.py").write_text("raise SystemExit('must not be imported')\n")
    before = list(sys.path)
    with pytest.raises(loader.ReferenceUnavailable, match="not a Self-Forcing checkout.*wan/modules/causal_model.py"):
        loader.load(tmp_path)
    assert sys.path == before
