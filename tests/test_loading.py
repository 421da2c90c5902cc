"""Generator loading: every container and key style, strict reports, wrong checkpoints, LoRA.

All checkpoints are tiny random state dicts written to tmp_path in the real formats.
"""

import json
from dataclasses import replace

import pytest
import torch

from deepforcing.checkpoints import (
    diffusers_to_wan,
    model_config,
    normalize_key,
    read_state_dict,
    save_model_folder,
    save_state_dict,
    wan_to_diffusers,
)
from deepforcing.errors import WeightsError
from deepforcing.loading import build_generator, load_generator
from deepforcing.lora import LoRALinear, apply_lora_unmerged, merge_lora, read_lora, unwrap_lora_keys
from deepforcing.model import CausalWan, MaskedAttention, Rope3D, TokenPositions, tiny
from deepforcing.model_files import WeightsConfig

LINEAR_TARGETS = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + ["ffn.0", "ffn.2"]
RANK = 4


def random_state(cfg=None, seed=0):
    torch.manual_seed(seed)
    model = CausalWan(cfg or tiny())
    return {k: torch.randn_like(v) for k, v in model.state_dict().items()}


def fresh_model(cfg=None, dtype=torch.float32):
    torch.manual_seed(1234)
    return CausalWan(cfg or tiny()).to(dtype)


def assert_loaded(model, sd):
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def wrapped(sd, rename):
    return {rename(k): v for k, v in sd.items()}


def fsdp(k):
    # FSDP wraps the root and every block: model._fsdp_wrapped_module.blocks.0._fsdp_wrapped_module.self_attn...
    k = "model._fsdp_wrapped_module." + k
    for i in range(tiny().num_layers):
        k = k.replace(f"blocks.{i}.", f"blocks.{i}._fsdp_wrapped_module.")
    return k


# ----------------------------------------------------------------------------------------------
# Round trips


def write_container(style, sd, other, tmp_path):
    """Write ``sd`` (and a decoy ``other`` where the container has a second generator) -> (path, kind)."""
    cfg = tiny()
    if style == "wan_folder":
        return save_model_folder(sd, tmp_path / "Wan", cfg), "wan"
    if style == "wan_safetensors_file":
        return save_model_folder(sd, tmp_path / "Wan", cfg) / "diffusion_pytorch_model.safetensors", "auto"
    if style == "sharded_folder":
        return save_model_folder(sd, tmp_path / "Wan", cfg, shards=3), "wan"
    if style == "sharded_index_file":
        folder = save_model_folder(sd, tmp_path / "Wan", cfg, shards=3)
        return folder / "diffusion_pytorch_model.safetensors.index.json", "auto"
    if style == "diffusers_transformer_folder":
        save_model_folder(sd, tmp_path / "Wan-Diffusers" / "transformer", cfg, names="diffusers")
        return tmp_path / "Wan-Diffusers", "diffusers"
    if style == "flat_pt":
        return save_state_dict(sd, tmp_path / "flat.pt"), "auto"
    if style == "self_forcing_ema":
        path = save_state_dict(sd, tmp_path / "self_forcing_dmd.pt", key="generator_ema", prefix="model.",
                               extra={"generator": {"model." + k: v for k, v in other.items()}, "critic": {}})
        return path, "self_forcing"
    if style == "self_forcing_ema_fsdp":
        torch.save({"generator_ema": wrapped(sd, fsdp), "generator": wrapped(other, fsdp)}, tmp_path / "sf.pt")
        return tmp_path / "sf.pt", "self_forcing"
    if style == "auto_prefers_ema":
        torch.save({"generator": wrapped(other, "model.".__add__), "generator_ema": wrapped(sd, "model.".__add__)},
                   tmp_path / "sf.pt")
        return tmp_path / "sf.pt", "auto"
    if style == "rolling_forcing_ema_fsdp":
        torch.save({"generator_ema": wrapped(sd, fsdp), "generator": wrapped(other, "model.".__add__)},
                   tmp_path / "rolling_forcing_dmd.pt")
        return tmp_path / "rolling_forcing_dmd.pt", "rolling_forcing"
    if style == "module_prefix":
        torch.save({"generator": wrapped(sd, "module.model.".__add__)}, tmp_path / "m.pt")
        return tmp_path / "m.pt", "causal_forcing"
    if style == "orig_mod_prefix":
        torch.save({"generator": wrapped(sd, "_orig_mod.model.".__add__)}, tmp_path / "m.pt")
        return tmp_path / "m.pt", "causvid"
    if style == "checkpoint_wrapped_inside":
        torch.save({"generator": wrapped(sd, lambda k: "model." + k.replace(
            "self_attn.", "_checkpoint_wrapped_module.self_attn.").replace("ffn.", "_checkpoint_wrapped_module.ffn."))},
            tmp_path / "m.pt")
        return tmp_path / "m.pt", "causvid"
    if style == "longlive_generator":
        torch.save({"generator": wrapped(sd, fsdp), "generator_ema": wrapped(other, fsdp)}, tmp_path / "ll.pt")
        return tmp_path / "ll.pt", "longlive"
    if style == "longlive_model_key":
        torch.save({"model": wrapped(sd, "model.".__add__), "step": 7}, tmp_path / "ll.pt")
        return tmp_path / "ll.pt", "longlive"
    raise AssertionError(style)


STYLES = [
    "wan_folder", "wan_safetensors_file", "sharded_folder", "sharded_index_file", "diffusers_transformer_folder",
    "flat_pt", "self_forcing_ema", "self_forcing_ema_fsdp", "auto_prefers_ema", "rolling_forcing_ema_fsdp",
    "module_prefix", "orig_mod_prefix", "checkpoint_wrapped_inside", "longlive_generator", "longlive_model_key",
]


@pytest.mark.parametrize("style", STYLES)
def test_round_trip_every_container(style, tmp_path):
    sd, other = random_state(seed=0), random_state(seed=1)
    path, kind = write_container(style, sd, other, tmp_path)
    model = fresh_model()
    report = load_generator(model, path, kind=kind)
    assert_loaded(model, sd)
    assert report.num_tensors == len(sd)
    assert report.diffusers_names == (style == "diffusers_transformer_folder")


def test_report_names_the_sub_dict_used(tmp_path):
    sd = random_state()
    path, _ = write_container("self_forcing_ema", sd, random_state(seed=1), tmp_path)
    report = load_generator(fresh_model(), path, kind="self_forcing")
    assert report.key == "generator_ema"
    report = load_generator(fresh_model(), path, kind="self_forcing", key="generator")
    assert report.key == "generator"
    assert "generator" in str(report)


def test_load_casts_to_model_dtype(tmp_path):
    sd = random_state()
    path = save_state_dict(sd, tmp_path / "sf.pt", key="generator_ema", prefix="model.")
    model = fresh_model(dtype=torch.bfloat16)
    report = load_generator(model, path, kind="self_forcing")
    assert model.dtype == torch.bfloat16 and report.source_dtypes == ("float32",)
    assert_loaded(model, sd)


def test_normalize_key_strips_every_wrapper():
    want = "blocks.3.self_attn.q.weight"
    for key in [
        "model.blocks.3.self_attn.q.weight",
        "module.model.blocks.3.self_attn.q.weight",
        "_orig_mod.model.blocks.3.self_attn.q.weight",
        "model._fsdp_wrapped_module.blocks.3._fsdp_wrapped_module.self_attn.q.weight",
        "model.blocks.3._checkpoint_wrapped_module.self_attn.q.weight",
        "module._orig_mod.model._fsdp_wrapped_module.blocks.3.self_attn.q.weight",
    ]:
        assert normalize_key(key) == want, key


def test_diffusers_names_follow_the_reference_table():
    # docs/reference_engines.md section 8.4, written out literally.
    table = {
        "time_embedding.0.weight": "condition_embedder.time_embedder.linear_1.weight",
        "time_embedding.2.bias": "condition_embedder.time_embedder.linear_2.bias",
        "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
        "text_embedding.2.weight": "condition_embedder.text_embedder.linear_2.weight",
        "time_projection.1.weight": "condition_embedder.time_proj.weight",
        "head.modulation": "scale_shift_table",
        "head.head.bias": "proj_out.bias",
        "patch_embedding.weight": "patch_embedding.weight",
        "blocks.7.modulation": "blocks.7.scale_shift_table",
        "blocks.7.ffn.0.weight": "blocks.7.ffn.net.0.proj.weight",
        "blocks.7.ffn.2.bias": "blocks.7.ffn.net.2.bias",
        "blocks.7.self_attn.q.weight": "blocks.7.attn1.to_q.weight",
        "blocks.7.self_attn.o.bias": "blocks.7.attn1.to_out.0.bias",
        "blocks.7.self_attn.norm_k.weight": "blocks.7.attn1.norm_k.weight",
        "blocks.7.cross_attn.v.weight": "blocks.7.attn2.to_v.weight",
        "blocks.7.cross_attn.norm_q.weight": "blocks.7.attn2.norm_q.weight",
        "blocks.7.norm3.weight": "blocks.7.norm2.weight",  # the swap
        "blocks.7.norm3.bias": "blocks.7.norm2.bias",
    }
    for ours, theirs in table.items():
        assert wan_to_diffusers(ours) == theirs
        assert diffusers_to_wan(theirs) == ours


def test_model_config_from_wan_and_diffusers_config_json(tmp_path):
    cfg = tiny()
    sd = random_state(cfg)
    arch = ("dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "patch_size",
            "eps")
    for names in ("wan", "diffusers"):
        built = model_config(save_model_folder(sd, tmp_path / names, cfg, names=names))
        assert {a: getattr(built, a) for a in arch} == {a: getattr(cfg, a) for a in arch}


# ----------------------------------------------------------------------------------------------
# Strict reports and wrong checkpoints


def load_fails(model, path, **kw) -> str:
    before = snapshot(model)
    with pytest.raises(WeightsError) as err:
        load_generator(model, path, **kw)
    assert_loaded(model, before)  # nothing was written
    return str(err.value)


def test_missing_key_is_named(tmp_path):
    sd = random_state()
    del sd["blocks.1.ffn.2.bias"]
    path = save_state_dict(sd, tmp_path / "sf.pt", key="generator_ema", prefix="model.")
    msg = load_fails(fresh_model(), path, kind="self_forcing")
    assert "1 missing" in msg and "blocks.1.ffn.2.bias [64]" in msg


def test_misshaped_key_names_both_shapes(tmp_path):
    sd = random_state()
    sd["blocks.0.self_attn.q.weight"] = torch.randn(64, 32)
    path = save_state_dict(sd, tmp_path / "sf.pt", key="generator_ema", prefix="model.")
    msg = load_fails(fresh_model(), path, kind="self_forcing")
    assert "blocks.0.self_attn.q.weight: checkpoint [64, 32], model [64, 64]" in msg


def test_unexpected_key_is_named(tmp_path):
    sd = random_state()
    sd["blocks.0.self_attn.extra.weight"] = torch.randn(3)
    path = save_model_folder(sd, tmp_path / "Wan", tiny())
    msg = load_fails(fresh_model(), path)
    assert "1 unexpected" in msg and "blocks.0.self_attn.extra.weight [3]" in msg


def test_one_report_lists_all_problems_and_caps_long_lists(tmp_path):
    sd = random_state()
    block1 = [k for k in sd if k.startswith("blocks.1.")]
    for k in block1:
        del sd[k]
    sd["blocks.0.ffn.0.weight"] = torch.randn(7, 64)
    sd["stray.weight"] = torch.randn(2)
    path = save_state_dict(sd, tmp_path / "m.pt", key="generator", prefix="model.")
    msg = load_fails(fresh_model(), path, kind="causvid")
    assert f"{len(block1)} missing" in msg and "1 unexpected" in msg and "1 mis-shaped" in msg
    assert "stray.weight" in msg and "blocks.0.ffn.0.weight: checkpoint [7, 64], model [128, 64]" in msg
    assert "more" in msg  # the missing list is longer than what is shown
    assert msg.count("blocks.1.") < len(block1)


def test_model_of_other_dims_fails_clearly(tmp_path):
    big = replace(tiny(), dim=128, ffn_dim=256, num_layers=3)
    path = save_state_dict(random_state(big), tmp_path / "sf.pt", key="generator_ema", prefix="model.")
    msg = load_fails(fresh_model(), path, kind="self_forcing")
    assert "other dimensions" in msg
    assert "dim 128 (model 64)" in msg and "num_layers 3 (model 2)" in msg


def test_config_json_of_another_model_fails_before_loading(tmp_path):
    # Same shapes, different head count: only config.json can tell.
    sd = random_state()
    folder = save_model_folder(sd, tmp_path / "Wan", replace(tiny(), num_heads=4))
    msg = load_fails(fresh_model(), folder)
    assert "num_heads=4 (model 2)" in msg


@pytest.mark.parametrize("what,expected", [
    ({"encoder.conv1.weight": torch.randn(4, 3, 3, 3, 3), "decoder.conv1.weight": torch.randn(4, 4, 3, 3, 3)}, "VAE"),
    ({"token_embedding.weight": torch.randn(10, 4), "blocks.0.attn.q.weight": torch.randn(4, 4)}, "text encoder"),
])
def test_vae_or_text_encoder_given_as_generator(tmp_path, what, expected):
    path = save_state_dict(what, tmp_path / "wrong.pth")
    msg = load_fails(fresh_model(), path)
    assert expected in msg and "Only 0 of the model's" in msg


def test_container_without_generator_key(tmp_path):
    torch.save({"critic": {"model.x": torch.zeros(1)}, "step": 3}, tmp_path / "sf.pt")
    msg = load_fails(fresh_model(), tmp_path / "sf.pt", kind="self_forcing")
    assert "no generator state dict" in msg and "'critic' (dict)" in msg and "'generator_ema'" in msg
    msg = load_fails(fresh_model(), tmp_path / "sf.pt")  # auto
    assert "no generator state dict" in msg


def test_flat_dict_refused_where_a_container_is_expected(tmp_path):
    path = save_state_dict(random_state(), tmp_path / "flat.pt")
    msg = load_fails(fresh_model(), path, kind="self_forcing")
    assert "'generator_ema' or 'generator'" in msg


def test_unreadable_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "cannot be read" in load_fails(fresh_model(), tmp_path / "junk.pt")
    assert "no such file" in load_fails(fresh_model(), tmp_path / "absent.pt")


def test_missing_shard_is_named(tmp_path):
    folder = save_model_folder(random_state(), tmp_path / "Wan", tiny(), shards=2)
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    msg = load_fails(fresh_model(), folder)
    assert "diffusion_pytorch_model-00002-of-00002.safetensors" in msg


# ----------------------------------------------------------------------------------------------
# LoRA


def random_lora(cfg, rank=RANK, seed=5):
    """{module: (A, B)} for every Linear of every block, as LongLive's PEFT targets."""
    torch.manual_seed(seed)
    lora = {}
    for i in range(cfg.num_layers):
        for t in LINEAR_TARGETS:
            out_f, in_f = {"ffn.0": (cfg.ffn_dim, cfg.dim), "ffn.2": (cfg.dim, cfg.ffn_dim)}.get(t, (cfg.dim, cfg.dim))
            lora[f"blocks.{i}.{t}"] = (torch.randn(rank, in_f) * 0.1, torch.randn(out_f, rank) * 0.1)
    return lora


def peft_keys(lora, adapter=".default"):
    """PEFT ``get_peft_model_state_dict`` names, written out from the documented pattern."""
    out = {}
    for module, (a, b) in lora.items():
        out[f"base_model.model.{module}.lora_A{adapter}.weight"] = a
        out[f"base_model.model.{module}.lora_B{adapter}.weight"] = b
    return out


def write_longlive(tmp_path, sd, lora, container=True, adapter=".default"):
    base = save_state_dict(sd, tmp_path / "longlive_base.pt", key="generator", prefix="model.")
    peft = peft_keys(lora, adapter)
    path = tmp_path / "lora.pt"
    torch.save({"generator_lora": peft, "critic_lora": {}, "step": 100} if container else peft, path)
    return base, path


@pytest.mark.parametrize("container,adapter", [(True, ".default"), (False, ""), (False, ".default"), (True, "")])
def test_read_lora_every_layout(tmp_path, container, adapter):
    lora = random_lora(tiny())
    _, path = write_longlive(tmp_path, random_state(), lora, container, adapter)
    got = read_lora(path)
    assert set(got) == set(lora) and len(got) == len(LINEAR_TARGETS) * tiny().num_layers
    for m, (a, b) in lora.items():
        assert torch.equal(got[m][0], a) and torch.equal(got[m][1], b)


@pytest.mark.parametrize("alpha", [None, 2.0 * RANK, 3.0])
def test_merged_weights_equal_hand_computed(tmp_path, alpha):
    sd, lora = random_state(), random_lora(tiny())
    base, path = write_longlive(tmp_path, sd, lora)
    model = fresh_model()
    report = load_generator(model, base, kind="longlive", lora=path, lora_alpha=alpha)
    assert report.lora_modules == len(lora) and report.lora_ranks == (RANK,)
    scale = (RANK if alpha is None else alpha) / RANK
    got = model.state_dict()
    for k, v in sd.items():
        module = k.removesuffix(".weight")
        if module in lora:
            a, b = lora[module]
            assert torch.equal(got[k], v + scale * (b @ a)), k
        else:
            assert torch.equal(got[k], v), k


def test_merge_in_float32_then_cast(tmp_path):
    sd, lora = random_state(), random_lora(tiny())
    model = fresh_model(dtype=torch.bfloat16)
    base, path = write_longlive(tmp_path, sd, lora)
    load_generator(model, base, kind="longlive", lora=path)
    w = model.state_dict()["blocks.1.ffn.2.weight"]
    a, b = lora["blocks.1.ffn.2"]
    expected = (sd["blocks.1.ffn.2.weight"].to(torch.bfloat16).float() + b @ a).to(torch.bfloat16)
    assert torch.equal(w, expected)


def forward(model, seed=3):
    cfg = model.cfg
    torch.manual_seed(seed)
    frames = 3
    x = torch.randn(1, frames, cfg.in_dim, *cfg.latent_hw)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
    pos = TokenPositions.of_frames(torch.arange(frames), cfg.grid())
    with torch.no_grad():
        return model(x, torch.full((1, frames), 500.0), model.text_state(ctx), MaskedAttention(Rope3D(cfg), pos))


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_merged_forward_equals_unmerged_forward(tmp_path):
    sd, lora = random_state(), random_lora(tiny())
    base, path = write_longlive(tmp_path, sd, lora)
    plain, merged, unmerged = fresh_model(), fresh_model(), fresh_model()
    load_generator(plain, base, kind="longlive")
    load_generator(merged, base, kind="longlive", lora=path, lora_mode="merged", lora_alpha=8.0)
    report = load_generator(unmerged, base, kind="longlive", lora=path, lora_mode="unmerged", lora_alpha=8.0)
    assert report.lora_mode == "unmerged"
    assert sum(isinstance(m, LoRALinear) for m in unmerged.modules()) == len(lora)
    assert_loaded_unwrapped = unwrap_lora_keys(unmerged)
    for k, v in sd.items():  # the base weights stay as loaded
        assert torch.equal(assert_loaded_unwrapped[k], v)
    out_plain, out_merged, out_unmerged = forward(plain), forward(merged), forward(unmerged)
    assert rel_err(out_merged, out_unmerged) <= 1e-5
    assert rel_err(out_plain, out_unmerged) > 1e-2  # the LoRA changes the output


def test_unmerged_linear_is_base_plus_scaled_lora():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    a, b = torch.randn(3, 6), torch.randn(5, 3)
    holder = torch.nn.Sequential(lin)
    apply_lora_unmerged(holder, {"0": (a, b)}, alpha=6.0)
    x = torch.randn(4, 6)
    expected = x @ lin.weight.T + lin.bias + 2.0 * (x @ a.T @ b.T)
    assert torch.allclose(holder(x), expected, atol=1e-6)


def test_lora_errors_name_the_module_and_leave_the_model_untouched(tmp_path):
    cfg = tiny()
    sd, lora = random_state(cfg), random_lora(cfg)
    lora["blocks.5.self_attn.q"] = lora["blocks.0.self_attn.q"]  # no such block
    a, b = lora["blocks.0.ffn.0"]
    lora["blocks.0.ffn.0"] = (a[:, :10], b)  # wrong in_features
    base, path = write_longlive(tmp_path, sd, lora)
    msg = load_fails(fresh_model(), base, kind="longlive", lora=path)
    assert "blocks.5.self_attn.q: no such module" in msg
    assert "blocks.0.ffn.0: A [4, 10], B [128, 4] do not fit Linear(64 -> 128)" in msg


def test_lora_with_a_missing_half(tmp_path):
    peft = peft_keys(random_lora(tiny()))
    del peft["base_model.model.blocks.1.cross_attn.o.lora_B.default.weight"]
    torch.save(peft, tmp_path / "lora.pt")
    with pytest.raises(WeightsError, match=r"blocks\.1\.cross_attn\.o: has lora_A only"):
        read_lora(tmp_path / "lora.pt")


def test_non_lora_file_given_as_lora(tmp_path):
    path = save_state_dict(random_state(), tmp_path / "base.pt", key="generator", prefix="model.")
    with pytest.raises(WeightsError, match="not a PEFT LoRA state dict"):
        read_lora(path)


def test_lora_given_as_generator_is_recognised(tmp_path):
    _, path = write_longlive(tmp_path, random_state(), random_lora(tiny()))
    msg = load_fails(fresh_model(), path, kind="longlive")
    assert "LoRA file" in msg


def test_merge_lora_direct_api():
    model = fresh_model()
    before = snapshot(model)
    lora = {"blocks.0.self_attn.k": (torch.ones(2, 64), torch.ones(64, 2))}
    merge_lora(model, lora, alpha=1.0)
    got = model.state_dict()["blocks.0.self_attn.k.weight"]
    assert torch.equal(got, before["blocks.0.self_attn.k.weight"] + 0.5 * 2.0)


# ----------------------------------------------------------------------------------------------
# Reading without a model, and building from a weights layout


def test_read_state_dict_is_lazy_for_safetensors(tmp_path):
    sd = random_state()
    folder = save_model_folder(sd, tmp_path / "Wan", tiny(), shards=2)
    lazy = read_state_dict(folder)
    assert lazy.shape("blocks.0.ffn.0.weight") == (128, 64)
    assert torch.equal(lazy["head.modulation"], sd["head.modulation"])


def test_build_generator_from_a_weights_layout(tmp_path):
    cfg = tiny()
    sd, lora = random_state(cfg), random_lora(cfg)
    weights = WeightsConfig(root=tmp_path)
    wan = weights.path("wan.config").parent
    wan.mkdir(parents=True)
    (wan / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v", **{
        k: getattr(cfg, k) for k in ("dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "in_dim", "out_dim",
                                     "text_dim", "text_len", "eps")}}))
    save_state_dict(sd, weights.path("longlive.generator"), key="generator", prefix="model._fsdp_wrapped_module.")
    torch.save({"generator_lora": peft_keys(lora)}, weights.path("longlive.lora"))
    model, report = build_generator("longlive", weights, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and report.lora_modules == len(lora)
    a, b = lora["blocks.0.self_attn.v"]
    expected = (sd["blocks.0.self_attn.v.weight"].to(torch.bfloat16).float() + b @ a).to(torch.bfloat16)
    assert torch.equal(model.state_dict()["blocks.0.self_attn.v.weight"], expected)
    assert torch.equal(model.state_dict()["head.head.weight"], sd["head.head.weight"].to(torch.bfloat16))


def test_build_generator_checks_files_first(tmp_path):
    with pytest.raises(WeightsError, match="self_forcing_dmd.pt"):
        build_generator("self_forcing", WeightsConfig(root=tmp_path))
    model, report = build_generator("tiny", WeightsConfig(root=tmp_path))
    assert report is None and model.cfg.name == "tiny"


# ----------------------------------------------------------------------------------------------
# Real diffusers model (names and semantics of the norm2/norm3 swap)


@pytest.mark.slow
def test_diffusers_wan_transformer_loads_and_matches(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    cfg = tiny()
    torch.manual_seed(0)
    theirs = diffusers.WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
    ).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0.0, 0.1)
    theirs.save_pretrained(tmp_path / "Wan2.1-T2V-1.3B-Diffusers" / "transformer")
    folder = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    ours = CausalWan(model_config(folder, latent_hw=cfg.latent_hw, text_len=cfg.text_len))
    report = load_generator(ours, folder)
    assert report.diffusers_names and report.num_tensors == len(theirs.state_dict())

    frames = 3
    x = torch.randn(1, frames, cfg.in_dim, *cfg.latent_hw)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim)
    pos = TokenPositions.of_frames(torch.arange(frames), cfg.grid())
    with torch.no_grad():
        got = ours(x, torch.full((1, frames), 700.0), ours.text_state(ctx), MaskedAttention(Rope3D(cfg), pos))
        want = theirs(x.transpose(1, 2), torch.tensor([700.0]), ctx, return_dict=False)[0].transpose(1, 2)
    assert rel_err(got, want) <= 1e-4
