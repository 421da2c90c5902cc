"""Weights layout: expected paths per model kind, overrides, and one error listing every missing file."""

import re
import subprocess
import sys

import pytest

from deepforcing.errors import ConfigError, WeightsError
from deepforcing.model_files import EMBEDDED_KINDS, FILES, KINDS, WEIGHTS_ROOT_ENV, WeightsConfig, check, describe


def touch_all(weights, ids):
    for i in ids:
        p = weights.path(i)
        if FILES[i].is_dir:
            p.mkdir(parents=True, exist_ok=True)
            (p / "tokenizer_config.json").write_text("{}")
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in EMBEDDED_KINDS])
def test_check_lists_every_missing_file_in_one_error(tmp_path, kind):
    weights = WeightsConfig(root=tmp_path)
    ids = weights.files(kind)
    with pytest.raises(WeightsError) as err:
        weights.check(kind)
    msg = str(err.value)
    assert f"{len(ids)} of the {len(ids)} model files" in msg
    assert msg.count("expected at ") == len(ids)
    for i in ids:
        f = FILES[i]
        assert f"- {i}:" in msg and str(weights.path(i)) in msg
        assert f"huggingface-cli download {f.repo} " in msg and f.repo_path in msg


@pytest.mark.parametrize("kind", list(EMBEDDED_KINDS))
def test_embedded_kinds_need_no_file_under_the_root(tmp_path, kind):
    assert WeightsConfig(root=tmp_path).check(kind) == {}


def test_only_the_missing_files_are_listed(tmp_path):
    weights = WeightsConfig(root=tmp_path)
    ids = weights.files("longlive")
    present, absent = ids[::2], ids[1::2]
    touch_all(weights, present)
    with pytest.raises(WeightsError) as err:
        weights.check("longlive")
    msg = str(err.value)
    assert f"{len(absent)} of the {len(ids)}" in msg
    assert all(f"- {i}:" in msg for i in absent) and not any(f"- {i}:" in msg for i in present)


def test_complete_layout_passes_and_returns_paths(tmp_path):
    weights = WeightsConfig(root=tmp_path)
    touch_all(weights, weights.files("longlive"))
    paths = weights.check("longlive")
    assert set(paths) == set(weights.files("longlive"))
    assert paths["longlive.generator"] == tmp_path / "longlive_models/models/longlive_base.pt"
    assert paths["longlive.lora"] == tmp_path / "longlive_models/models/lora.pt"
    assert weights.lora("longlive") == paths["longlive.lora"] and weights.lora("self_forcing") is None


def test_empty_tokenizer_folder_counts_as_missing(tmp_path):
    weights = WeightsConfig(root=tmp_path)
    touch_all(weights, weights.files("self_forcing"))
    for p in weights.path("wan.tokenizer").iterdir():
        p.unlink()
    with pytest.raises(WeightsError, match=r"(?s)1 of the .*- wan\.tokenizer:"):
        weights.check("self_forcing")


def test_components_select_what_is_checked(tmp_path):
    weights = WeightsConfig(root=tmp_path)
    gen = weights.files("self_forcing", components=("generator",))
    assert gen == ["wan.config", "self_forcing.generator"]
    touch_all(weights, gen)
    assert set(weights.check("self_forcing", components=("generator",))) == set(gen)
    with pytest.raises(WeightsError, match="wan.vae"):
        weights.check("self_forcing", components=("generator", "vae"))
    with pytest.raises(ConfigError, match="unknown component"):
        weights.files("self_forcing", components=("unet",))


def test_tiny_needs_no_files(tmp_path):
    assert check("tiny", WeightsConfig(root=tmp_path / "nothing_here")) == {}


def test_wan_kind_needs_the_base_dit():
    assert "wan.dit" in WeightsConfig().files("wan")
    assert "wan.dit" not in WeightsConfig().files("self_forcing")


def test_overrides_absolute_and_relative(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "sf.pt"
    weights = WeightsConfig(
        root=tmp_path / "root", wan_dir=tmp_path / "Wan", paths={"self_forcing.generator": elsewhere,
                                                                  "causvid.generator": "cv/model.pt"},
    )
    assert weights.path("self_forcing.generator") == elsewhere
    assert weights.path("causvid.generator") == tmp_path / "root" / "cv/model.pt"
    assert weights.path("wan.vae") == tmp_path / "Wan" / "Wan2.1_VAE.pth"
    assert weights.generator("wan") == tmp_path / "Wan"
    # A file moved away from the repository's layout gets a download-then-move line.
    assert weights.download_command("self_forcing.generator").endswith(f"mv {tmp_path}/root/downloads/"
                                                                       f"checkpoints/self_forcing_dmd.pt {elsewhere}")


def test_download_command_puts_each_file_where_it_is_expected(tmp_path):
    weights = WeightsConfig(root=tmp_path)
    for i, f in FILES.items():
        cmd = weights.download_command(i)
        local_dir = re.search(r"--local-dir (\S+)$", cmd)[1]
        assert f"{local_dir}/{f.repo_path}" == str(weights.path(i)), i


def test_root_from_environment(tmp_path):
    code = "from deepforcing.model_files import WeightsConfig; print(WeightsConfig().path('causvid.generator'))"
    env_root = tmp_path / "env_root"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "", WEIGHTS_ROOT_ENV: str(env_root), "PYTHONPATH": ":".join(sys.path)})
    assert out.stdout.strip() == str(env_root / "autoregressive_checkpoint/model.pt")


def test_unknown_names_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown model kind 'self-forcing'"):
        WeightsConfig(root=tmp_path).check("self-forcing")
    with pytest.raises(ConfigError, match="unknown file id"):
        WeightsConfig(paths={"selfforcing.generator": "x.pt"})
    with pytest.raises(ConfigError, match="unknown weights setting"):
        WeightsConfig.from_dict({"rooot": "x"})


def test_from_dict(tmp_path):
    weights = WeightsConfig.from_dict({"root": str(tmp_path), "paths": {"longlive.lora": "my_lora.pt"}})
    assert weights.path("longlive.lora") == tmp_path / "my_lora.pt"
    assert WeightsConfig.from_dict({"root": None}).root == WeightsConfig().root


def test_describe_names_every_kind_file_and_source(tmp_path):
    table = describe(WeightsConfig(root=tmp_path))
    for kind in KINDS:
        assert f"| {kind} |" in table
    for i, f in FILES.items():
        assert f"| {i} |" in table and f.repo in table and f"`{f.repo_path}`" in table
    assert "| no |" in table and "| yes |" in table  # tiny is always ready
