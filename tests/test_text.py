"""Text encoders: umT5 from Wan's checkpoint format vs Wan's reference code, the random stand-in, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_files import random_state_from_manifest

FIXTURES = Path(__file__).parent / "fixtures" / "text"
MANIFEST = json.loads((FIXTURES / "wan_t5_tiny_manifest.json").read_text())
WEIGHT_SEED = 1234


GOLDEN_PATH = FIXTURES / "umt5_golden.safetensors"


@pytest.fixture(scope="module")
def golden() -> dict:
    from safetensors import safe_open

    with safe_open(str(GOLDEN_PATH), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {**tensors, "prompts": json.loads(meta["prompts"]), "text_len": int(meta["text_len"])}


@pytest.fixture(scope="module")
def wan_t5_file(tmp_path_factory) -> Path:
    """Tiny umT5 with random weights, saved as Wan's bf16 .pth with Wan's key names."""
    state = {k: v.to(torch.bfloat16) for k, v in random_state_from_manifest(MANIFEST["shapes"], WEIGHT_SEED).items()}
    path = tmp_path_factory.mktemp("t5") / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A T5 tokenizer folder (tokenizer.json + spiece.model) around the tiny sentencepiece model."""
    from transformers import T5TokenizerFast

    path = tmp_path_factory.mktemp("tok")
    T5TokenizerFast(vocab_file=str(FIXTURES / "spiece.model"), extra_ids=0).save_pretrained(str(path))
    return path


def test_wan_checkpoint_maps_onto_umt5_and_matches_reference(wan_t5_file, golden):
    from deepforcing.text import load_wan_t5

    model = load_wan_t5(wan_t5_file)
    cfg = MANIFEST["config"]
    assert (model.config.vocab_size, model.config.d_model, model.config.d_ff) == (
        cfg["vocab_size"], cfg["dim"], cfg["dim_ffn"])
    assert (model.config.num_layers, model.config.num_heads) == (cfg["encoder_layers"], cfg["num_heads"])
    assert model.config.relative_attention_num_buckets == cfg["num_buckets"]
    with torch.no_grad():
        out = model(input_ids=golden["long_ids"], attention_mask=golden["long_mask"]).last_hidden_state
    # 160 tokens: relative distances beyond the 128 max distance share a bucket; row 1 has padding keys.
    torch.testing.assert_close(out, golden["long_hidden"], atol=1e-5, rtol=0)


def test_umt5_text_encoder_matches_reference_pipeline(wan_t5_file, tokenizer_dir, golden):
    from deepforcing.text import UMT5TextEncoder

    enc = UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=golden["text_len"])
    ids, mask = enc.tokenize(golden["prompts"])
    assert torch.equal(ids, golden["prompt_ids"]) and torch.equal(mask, golden["prompt_mask"])
    out = enc.encode(golden["prompts"])
    assert out.shape == (len(golden["prompts"]), golden["text_len"], MANIFEST["config"]["dim"])
    assert enc.text_dim == MANIFEST["config"]["dim"]
    torch.testing.assert_close(out, golden["prompt_embeds"], atol=1e-5, rtol=0)


def test_umt5_padding_rows_are_exactly_zero(wan_t5_file, tokenizer_dir, golden):
    from deepforcing.text import UMT5TextEncoder

    enc = UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=golden["text_len"])
    out = enc.encode(golden["prompts"])
    lengths = golden["prompt_mask"].sum(1).tolist()
    assert min(lengths) < golden["text_len"] == max(lengths)  # both padded and truncated prompts
    for row, n in zip(out, lengths, strict=True):
        assert (row[n:] == 0).all()
        assert (row[:n].abs().sum(-1) > 0).all()


def test_diffusers_text_encoder_folder_gives_same_embeddings(wan_t5_file, tokenizer_dir, golden, tmp_path):
    from deepforcing.text import UMT5TextEncoder, load_wan_t5

    folder = tmp_path / "text_encoder"
    load_wan_t5(wan_t5_file).save_pretrained(str(folder), safe_serialization=True)
    enc = UMT5TextEncoder(folder, tokenizer_dir, text_len=golden["text_len"])
    assert enc.text_dim == MANIFEST["config"]["dim"]
    torch.testing.assert_close(enc.encode(golden["prompts"]), golden["prompt_embeds"], atol=1e-5, rtol=0)


def test_num_heads_is_checked_against_the_checkpoint(wan_t5_file, tokenizer_dir):
    from deepforcing.errors import ConfigError
    from deepforcing.text import UMT5TextEncoder

    enc = UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=8, num_heads=64)
    with pytest.raises(ConfigError, match="num_heads=64 but the checkpoint"):
        enc.encode(["a cat"])


def test_wrong_checkpoint_and_missing_files_raise_weights_error(tmp_path, tokenizer_dir):
    from deepforcing.errors import WeightsError
    from deepforcing.text import UMT5TextEncoder

    other = tmp_path / "other.pth"
    torch.save({"patch_embedding.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="token_embedding.weight"):
        UMT5TextEncoder(other, tokenizer_dir, text_len=8).encode(["a cat"])
    with pytest.raises(WeightsError, match="not found"):
        UMT5TextEncoder(tmp_path / "absent.pth", tokenizer_dir)
    with pytest.raises(WeightsError, match="tokenizer"):
        UMT5TextEncoder(other, tmp_path / "no_tokenizer")


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_prompt_errors_before_any_model_loads(tmp_path, tokenizer_dir, bad):
    from deepforcing.errors import ConfigError
    from deepforcing.text import CachedTextEncoder, RandomTextEncoder, UMT5TextEncoder

    garbage = tmp_path / "not_a_checkpoint.pth"
    garbage.write_bytes(b"loading this would raise WeightsError")
    umt5 = UMT5TextEncoder(garbage, tokenizer_dir, text_len=8)
    for enc in (umt5, RandomTextEncoder(8, 4), CachedTextEncoder(umt5, tmp_path / "cache")):
        with pytest.raises(ConfigError, match="empty prompt at index 1"):
            enc.encode(["a cat", bad])
    assert umt5._model is None
    with pytest.raises(ConfigError, match="single string"):
        RandomTextEncoder(8, 4).encode("a cat")


def test_clean_prompt_follows_wan_whitespace_cleaning():
    from deepforcing.text import clean_prompt

    assert clean_prompt("  A cat &amp;amp; a\n\tdog  ") == "A cat & a dog"
    assert clean_prompt("CafÃ© cup") == "Café cup"


# ----------------------------------------------------------------------------------------------
# Random stand-in


def test_random_encoder_is_deterministic_per_prompt_and_zero_padded():
    from deepforcing.text import RandomTextEncoder

    enc = RandomTextEncoder(text_len=16, text_dim=8, seed=3)
    a = enc.encode(["a cat", "a dog walks in the park"])
    b = RandomTextEncoder(16, 8, seed=3).encode(["a dog walks in the park", "x", "a cat"])
    assert torch.equal(a[0], b[2]) and torch.equal(a[1], b[0])  # independent of batch and instance
    assert not torch.equal(a[0], RandomTextEncoder(16, 8, seed=4).encode(["a cat"])[0])
    assert not torch.equal(a[0][:2], a[1][:2])
    for row, prompt in zip(a, ["a cat", "a dog walks in the park"], strict=True):
        n = enc.num_tokens(prompt)
        assert (row[n:] == 0).all() and (row[:n] != 0).all()
    words = 6
    assert words + 1 <= enc.num_tokens("a dog walks in the park") <= 2 * words + 1
    assert enc.num_tokens(" ".join(["word"] * 100)) == 16  # capped at text_len


def test_random_encoder_does_not_depend_on_python_hash_seed():
    import subprocess
    import sys

    from deepforcing.text import RandomTextEncoder

    prompt = "a cat on the moon"
    code = (
        "from deepforcing.text import RandomTextEncoder;"
        f"print(hash({prompt!r}), float(RandomTextEncoder(16, 8, seed=3).encode([{prompt!r}]).sum()))"
    )
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONHASHSEED": "12345", "PATH": ""}, check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[1]).stdout.split()
    assert int(out[0]) != hash(prompt)  # the other process really hashes strings differently
    # the same embedding (a hash-dependent one differs by O(1)); the float32 sum may round differently when the
    # two processes run different CPU kernels
    assert float(out[1]) == pytest.approx(float(RandomTextEncoder(16, 8, seed=3).encode([prompt]).sum()), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Cache


class CountingEncoder:
    """Forwards to a real encoder and records which prompts reached it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.text_len, self.text_dim = inner.text_len, inner.text_dim

    @property
    def identity(self) -> str:
        return self.inner.identity

    def encode(self, prompts):
        self.calls.append(list(prompts))
        return self.inner.encode(prompts)


def test_cache_hit_avoids_re_encoding(tmp_path):
    from deepforcing.text import CachedTextEncoder, EmbeddingCache, RandomTextEncoder

    counting = CountingEncoder(RandomTextEncoder(16, 8, seed=0))
    cached = CachedTextEncoder(counting, EmbeddingCache(tmp_path))
    prompts = ["a cat", "a dog", "a cat"]
    first = cached.encode(prompts)
    assert counting.calls == [["a cat", "a dog"]]  # duplicates encoded once
    assert torch.equal(first, RandomTextEncoder(16, 8, seed=0).encode(prompts))
    # A new process would build a new wrapper: the files alone must suffice.
    again = CachedTextEncoder(counting, EmbeddingCache(tmp_path)).encode(["a dog", "a cat", "a bird"])
    assert counting.calls == [["a cat", "a dog"], ["a bird"]]
    assert torch.equal(again[:2], first[[1, 0]])
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.glob("*.safetensors"))) == 3


def test_cache_stores_only_unpadded_rows_and_restores_padding(tmp_path):
    from safetensors import safe_open

    from deepforcing.text import EmbeddingCache, RandomTextEncoder

    enc = RandomTextEncoder(32, 8, seed=0)
    emb = enc.encode(["a cat sits"])[0]
    cache = EmbeddingCache(tmp_path)
    path = cache.put("a cat sits", enc.identity, emb)
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("embedding").shape[0] == enc.num_tokens("a cat sits") < 32
    assert torch.equal(cache.get("a cat sits", enc.identity, 32), emb)
    assert cache.get("a cat sits", enc.identity, 16) is None  # another text_len is a miss


def test_cache_keys_differ_by_prompt_and_encoder_identity(tmp_path, wan_t5_file, tokenizer_dir):
    import os

    from deepforcing.text import CachedTextEncoder, EmbeddingCache, RandomTextEncoder, UMT5TextEncoder

    key = EmbeddingCache.key
    assert key("a cat", "enc") != key("a cat ", "enc") != key("a dog", "enc")
    assert key("a cat", "enc") != key("a cat", "enc2")
    assert RandomTextEncoder(16, 8, 0).identity != RandomTextEncoder(16, 8, 1).identity

    umt5 = UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=16)
    ident = umt5.identity
    assert ident != UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=8).identity
    assert ident != UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=16, dtype=torch.bfloat16).identity
    st = wan_t5_file.stat()
    os.utime(wan_t5_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file was replaced
    assert UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=16).identity != ident
    content = UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=16, identity_mode="sha256").identity
    os.utime(wan_t5_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert content == UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=16, identity_mode="sha256").identity

    # All hits: the umT5 model is never built.
    CachedTextEncoder(umt5, tmp_path).encode(["a red fox"])
    fresh = UMT5TextEncoder(wan_t5_file, tokenizer_dir, text_len=16)
    out = CachedTextEncoder(fresh, tmp_path).encode(["a red fox"])
    assert fresh._model is None
    torch.testing.assert_close(out, umt5.encode(["a red fox"]), atol=0, rtol=0)


def test_text_encoder_for_picks_the_stand_in_and_checks_width(tmp_path, wan_t5_file, tokenizer_dir):
    from deepforcing.errors import ConfigError
    from deepforcing.model import tiny
    from deepforcing.text import CachedTextEncoder, RandomTextEncoder, text_encoder_for

    cfg = tiny()
    enc = text_encoder_for(cfg.text_len, cfg.text_dim)
    assert isinstance(enc, RandomTextEncoder) and enc.encode(["a cat"]).shape == (1, cfg.text_len, cfg.text_dim)
    assert isinstance(text_encoder_for(cfg.text_len, cfg.text_dim, cache_dir=tmp_path), CachedTextEncoder)
    assert text_encoder_for(cfg.text_len, cfg.text_dim, wan_t5_file, tokenizer_dir).text_dim == cfg.text_dim
    with pytest.raises(ConfigError, match="differs from the backbone's text_dim 64"):
        text_encoder_for(cfg.text_len, 64, wan_t5_file, tokenizer_dir)
