"""Published prompt sets are fetched with a checksum and resolved whatever the current folder; the
published results ship with the package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deepforcing.errors import ConfigError
from deepforcing.prompts import SETS, read_set

ROOT = Path(__file__).resolve().parents[1]


def test_missing_set_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFORCING_PROMPTS", str(tmp_path))
    with pytest.raises(ConfigError, match="python -m eval.prompts fetch moviegen_extended"):
        read_set("moviegen_extended")


def test_fetch_checks_the_checksum_and_the_config_reads_it_from_any_folder(tmp_path, monkeypatch, published_prompts):
    from eval.prompts import main

    published = published_prompts / SETS["moviegen_extended"].file
    store = tmp_path / "prompts"
    monkeypatch.setenv("DEEPFORCING_PROMPTS", str(store))
    bad = tmp_path / "edited.txt"
    bad.write_bytes(published.read_bytes().replace(b"a", b"A", 1))
    assert main(["fetch", "moviegen_extended", "--from", str(bad)]) == 1
    assert not store.exists() or not any(store.iterdir())  # nothing written
    assert main(["fetch", "moviegen_extended", "--from", str(published)]) == 0
    lines = [x.strip() for x in published.read_text().splitlines() if x.strip()]
    assert read_set("moviegen_extended") == lines
    (store / SETS["moviegen_extended"].file).write_bytes(bad.read_bytes())  # replaced behind our back
    with pytest.raises(ConfigError, match="is not the published"):
        read_set("moviegen_extended")
    main(["fetch", "moviegen_extended", "--from", str(published)])
    monkeypatch.chdir(tmp_path)  # resolved independently of the current folder
    sys.path.insert(0, str(ROOT))
    from test_harness import composed

    import run

    point = run.point_from_cfg(composed(["prompts=moviegen21", "logger=none"]))
    assert list(point.prompts) == lines[:21]


def test_published_results_ship_with_the_package(monkeypatch):
    from deepforcing.compile.tables import PUBLISHED_CSV, default_published_path, read_published

    monkeypatch.delenv("DEEPFORCING_PUBLISHED", raising=False)
    assert default_published_path() == PUBLISHED_CSV and "deepforcing" in PUBLISHED_CSV.parts
    df = read_published()
    assert {"Self Forcing", "LongLive", "Rolling Forcing"} <= set(df["method"])
