"""Text conditioning: prompt -> [B, text_len, text_dim] embeddings, zero beyond each prompt's tokens.

Three encoders share the :class:`TextEncoder` protocol:

- :class:`UMT5TextEncoder`: the umT5-XXL encoder Wan2.1 and Self-Forcing condition on, run with the
  transformers ``UMT5EncoderModel``. It loads either Wan's own checkpoint
  (``models_t5_umt5-xxl-enc-bf16.pth``, Wan's module names, mapped by :func:`wan_t5_to_hf`) or a
  diffusers ``text_encoder/`` folder (already transformers names), plus a LOCAL ``google/umt5-xxl``
  tokenizer folder. Prompts are cleaned as Wan's tokenizer wrapper does (ftfy, HTML unescape,
  whitespace collapse), padded and truncated to ``text_len`` tokens, and the outputs at and after
  each prompt's token count are zeroed, as the Self-Forcing text wrapper does.
- :class:`RandomTextEncoder`: weight-free, deterministic per prompt; for the tiny default run and tests.
- :class:`CachedTextEncoder`: wraps any encoder with an on-disk :class:`EmbeddingCache`, so a sweep
  encodes each prompt once.

Architecture check (Wan ``wan/modules/t5.py`` vs transformers ``modeling_umt5.py``): both use a T5 RMS
layer norm without mean subtraction or bias (eps 1e-6, variance in fp32), attention without the
1/sqrt(d) scaling, a separate relative-position bias table in every layer (Wan ``shared_pos=False``,
UMT5 ``has_relative_attention_bias=True`` in every self-attention), bidirectional buckets with
max distance 128, and a gated FFN ``fc2(fc1(x) * gelu_tanh(gate(x)))`` (UMT5
``wo(wi_1(x) * gelu_new(wi_0(x)))``). Padding keys are masked with the dtype's most negative value in
both. ``tests/test_text.py`` checks the outputs against Wan's reference code on random weights.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch

from deepforcing.checkpoints import torch_load
from deepforcing.errors import ConfigError, WeightsError

# Wan's T5RelativeEmbedding default: relative distances >= 128 share the last bucket.
WAN_T5_MAX_DISTANCE = 128
# Wan's T5LayerNorm default epsilon.
WAN_T5_LAYER_NORM_EPS = 1e-6
# umT5-XXL, for the error message when a checkpoint disagrees with a caller's num_heads.
UMT5_XXL_NUM_HEADS = 64

IdentityMode = Literal["stat", "sha256"]


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns prompts into padded, zero-masked text embeddings."""

    text_len: int
    text_dim: int

    @property
    def identity(self) -> str:
        """A string that changes whenever the embeddings for the same prompt could change."""
        ...

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """[B, text_len, text_dim] floats; rows at and after each prompt's token count are zero."""
        ...


# ----------------------------------------------------------------------------------------------
# Prompt checks and Wan's cleaning


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """Validate a batch of prompts before any model is touched."""
    if isinstance(prompts, str):
        raise ConfigError("encode() takes a list of prompts, got a single string: wrap it as [prompt]")
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("no prompts given: pass at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ConfigError(f"prompt {i} is a {type(p).__name__}, not a string")
        if not p.strip():
            raise ConfigError(f"empty prompt at index {i} ({p!r}): every prompt needs some text")
    return prompts


def clean_prompt(text: str) -> str:
    """Wan's ``HuggingfaceTokenizer(clean='whitespace')``: ftfy fix, HTML unescape twice, collapse
    whitespace runs to one space, strip."""
    import ftfy
    import regex  # the module Wan uses; its \\s follows Unicode White_Space

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


# ----------------------------------------------------------------------------------------------
# Identities of files on disk (for cache keys)


def path_identity(path: str | Path, mode: IdentityMode = "stat") -> str:
    """Identity of a weights file or folder.

    ``stat`` (default, instant): resolved path, size and modification time in ns of every file.
    Replacing or touching a file changes it; a copy at another path gets another identity, which
    costs one extra encode per prompt but never gives a wrong hit. ``sha256``: a digest of the
    contents (reads every byte: about a minute for the 11 GB umT5-XXL file), path-independent.
    """
    root = Path(path)
    if not root.exists():
        raise WeightsError(f"{root}: no such file or folder")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    if mode == "stat":
        parts = []
        for f in files:
            st = f.stat()
            parts.append(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        return "stat:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()
    if mode == "sha256":
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(block)
        return "sha256:" + digest.hexdigest()
    raise ConfigError(f"unknown identity mode {mode!r}: use 'stat' or 'sha256'")


def stable_hash(*parts: str) -> int:
    """A 64-bit integer from strings, identical across processes (unlike Python's hash())."""
    data = "\x1f".join(parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


# ----------------------------------------------------------------------------------------------
# Random stand-in


class RandomTextEncoder:
    """Deterministic random embeddings, for the tiny default run and tests (no weights).

    Each prompt gets its own generator seeded from ``seed`` and a SHA-256 of the cleaned prompt, so
    the result depends only on (prompt, seed, shape), in any batch and any process. The number of
    non-padded rows mimics a tokenizer: one to two tokens per word plus the end token, capped at
    ``text_len``.
    """

    def __init__(self, text_len: int, text_dim: int, seed: int = 0):
        if text_len <= 0 or text_dim <= 0:
            raise ConfigError(f"text_len and text_dim must be positive, got {text_len} and {text_dim}")
        self.text_len, self.text_dim, self.seed = text_len, text_dim, seed

    @property
    def identity(self) -> str:
        return f"random:text_len={self.text_len}:text_dim={self.text_dim}:seed={self.seed}"

    def num_tokens(self, prompt: str) -> int:
        words = len(clean_prompt(prompt).split(" "))
        gen = torch.Generator().manual_seed(stable_hash("length", str(self.seed), clean_prompt(prompt)))
        tokens = int(torch.randint(words, 2 * words + 1, (1,), generator=gen)) + 1  # + end token
        return min(tokens, self.text_len)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        prompts = check_prompts(prompts)
        out = torch.zeros(len(prompts), self.text_len, self.text_dim)
        for i, p in enumerate(prompts):
            gen = torch.Generator().manual_seed(stable_hash("values", str(self.seed), clean_prompt(p)))
            n = self.num_tokens(p)
            out[i, :n] = torch.randn(n, self.text_dim, generator=gen)
        return out


# ----------------------------------------------------------------------------------------------
# umT5 from Wan's checkpoint or a diffusers folder


def wan_t5_to_hf(key: str) -> str:
    """Map one key of Wan's T5 encoder checkpoint to transformers' ``UMT5EncoderModel`` name."""
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    parts = key.split(".")
    if parts[0] != "blocks" or len(parts) < 4:
        raise WeightsError(f"unexpected key {key!r} in a Wan T5 checkpoint")
    i, rest = parts[1], ".".join(parts[2:])
    attn = f"encoder.block.{i}.layer.0"
    ffn = f"encoder.block.{i}.layer.1"
    table = {
        "norm1.weight": f"{attn}.layer_norm.weight",
        "attn.q.weight": f"{attn}.SelfAttention.q.weight",
        "attn.k.weight": f"{attn}.SelfAttention.k.weight",
        "attn.v.weight": f"{attn}.SelfAttention.v.weight",
        "attn.o.weight": f"{attn}.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": f"{attn}.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": f"{ffn}.layer_norm.weight",
        "ffn.gate.0.weight": f"{ffn}.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": f"{ffn}.DenseReluDense.wi_1.weight",
        "ffn.fc2.weight": f"{ffn}.DenseReluDense.wo.weight",
    }
    if rest not in table:
        raise WeightsError(f"unexpected key {key!r} in a Wan T5 checkpoint")
    return table[rest]


def umt5_config_from_wan(state: dict[str, torch.Tensor], num_heads: int | None = None):
    """A ``UMT5Config`` whose shapes match Wan's T5 encoder state dict.

    Every size comes from a tensor shape: vocab and width from ``token_embedding``, FFN width from
    ``ffn.fc1``, layers from the block count, and (buckets, heads) from each layer's relative
    position table ``pos_embedding.embedding.weight`` [buckets, heads]. A ``num_heads`` passed by the
    caller is checked against that table.
    """
    from transformers import UMT5Config

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise WeightsError(
                f"key {key!r} missing: this is not Wan's umT5 encoder checkpoint "
                "(expected models_t5_umt5-xxl-enc-bf16.pth or a diffusers text_encoder/ folder)"
            )
        return state[key]

    vocab, d_model = need("token_embedding.weight").shape
    num_layers = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if num_layers == 0:
        raise WeightsError("no 'blocks.*' keys: this is not Wan's umT5 encoder checkpoint")
    buckets, heads = need("blocks.0.pos_embedding.embedding.weight").shape
    if num_heads is not None and num_heads != heads:
        raise ConfigError(
            f"num_heads={num_heads} but the checkpoint's relative-position table has {heads} heads "
            f"(umT5-XXL has {UMT5_XXL_NUM_HEADS}); pass num_heads={heads} or leave it unset"
        )
    inner = need("blocks.0.attn.q.weight").shape[0]
    if inner % heads:
        raise WeightsError(f"attention width {inner} is not divisible by {heads} heads")
    d_ff = need("blocks.0.ffn.fc1.weight").shape[0]
    return UMT5Config(
        vocab_size=int(vocab), d_model=int(d_model), d_kv=int(inner // heads), d_ff=int(d_ff),
        num_layers=int(num_layers), num_heads=int(heads), relative_attention_num_buckets=int(buckets),
        relative_attention_max_distance=WAN_T5_MAX_DISTANCE, layer_norm_epsilon=WAN_T5_LAYER_NORM_EPS,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        pad_token_id=0, eos_token_id=1,
    )


def load_wan_t5(path: str | Path, num_heads: int | None = None, dtype: torch.dtype = torch.float32):
    """Load Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` into a transformers ``UMT5EncoderModel``."""
    from transformers import UMT5EncoderModel

    try:
        state = torch_load(path)
    except Exception as e:  # noqa: BLE001 - re-raised with what to do
        raise WeightsError(f"{path}: cannot be read as a torch checkpoint ({e}); expected Wan's T5 .pth") from e
    config = umt5_config_from_wan(state, num_heads)
    mapped = {wan_t5_to_hf(k): v for k, v in state.items()}
    mapped["encoder.embed_tokens.weight"] = mapped["shared.weight"]  # tied to shared.weight
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    result = model.load_state_dict(mapped, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path}: checkpoint does not match umT5 (missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )
    model.tie_weights()
    return model.to(dtype).eval().requires_grad_(False)


class UMT5TextEncoder:
    """The umT5 encoder Wan conditions on, loaded lazily on the first :meth:`encode`.

    Args:
        weights: Wan's ``models_t5_umt5-xxl-enc-bf16.pth`` (or any ``.pth`` with Wan's T5 names), or a
            diffusers ``text_encoder/`` folder with ``config.json`` and safetensors.
        tokenizer: a LOCAL ``google/umt5-xxl`` tokenizer folder (Wan ships it as ``google/umt5-xxl/``).
        text_len: tokens per prompt (Wan: 512); prompts are padded and truncated to it.
        num_heads: optional check; the head count is read from the relative-position tables.
        dtype: compute dtype. The Self-Forcing wrapper runs the bf16 checkpoint in float32.
        identity_mode: how the weights file enters cache keys (:func:`path_identity`).
        batch_size: prompts per forward pass.
    """

    def __init__(
        self,
        weights: str | Path,
        tokenizer: str | Path,
        text_len: int = 512,
        num_heads: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        identity_mode: IdentityMode = "stat",
        batch_size: int = 8,
    ):
        self.weights, self.tokenizer_path = Path(weights), Path(tokenizer)
        if not self.weights.exists():
            raise WeightsError(
                f"{self.weights}: not found. Pass Wan's models_t5_umt5-xxl-enc-bf16.pth or a diffusers "
                "text_encoder/ folder (weights are never downloaded)"
            )
        if not self.tokenizer_path.is_dir():
            raise WeightsError(
                f"{self.tokenizer_path}: not a folder. Pass a local google/umt5-xxl tokenizer folder "
                "(Wan2.1-T2V-1.3B/google/umt5-xxl)"
            )
        if self.weights.is_dir() and not (self.weights / "config.json").is_file():
            raise WeightsError(f"{self.weights}: a diffusers text_encoder/ folder needs a config.json")
        if text_len <= 0:
            raise ConfigError(f"text_len must be positive, got {text_len}")
        self.text_len, self.num_heads, self.dtype = text_len, num_heads, dtype
        self.device, self.batch_size = torch.device(device), batch_size
        self.identity_mode = identity_mode
        self._model = None
        self._tokenizer = None
        self._identity: str | None = None
        self._text_dim: int | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = "|".join([
                "umt5",
                f"weights={path_identity(self.weights, self.identity_mode)}",
                f"tokenizer={path_identity(self.tokenizer_path, 'stat')}",
                f"text_len={self.text_len}",
                f"dtype={self.dtype}",
            ])
        return self._identity

    @property
    def text_dim(self) -> int:
        """The encoder width, read from the checkpoint without building the model."""
        if self._text_dim is None:
            if self._model is not None:
                self._text_dim = self._model.config.d_model
            elif self.weights.is_dir():
                self._text_dim = int(json.loads((self.weights / "config.json").read_text())["d_model"])
            else:
                state = torch_load(self.weights)
                self._text_dim = int(state["token_embedding.weight"].shape[1])
        return self._text_dim

    @property
    def model(self):
        if self._model is None:
            if self.weights.is_dir():
                from transformers import UMT5EncoderModel

                model = UMT5EncoderModel.from_pretrained(
                    str(self.weights), local_files_only=True, torch_dtype=self.dtype
                ).eval().requires_grad_(False)
                if self.num_heads is not None and model.config.num_heads != self.num_heads:
                    raise ConfigError(
                        f"num_heads={self.num_heads} but {self.weights}/config.json says "
                        f"{model.config.num_heads}; leave num_heads unset"
                    )
            else:
                model = load_wan_t5(self.weights, self.num_heads, self.dtype)
            self._model = model.to(self.device)
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path), local_files_only=True)
        return self._tokenizer

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask), both [B, text_len], as Wan's tokenizer wrapper produces them."""
        batch = self.tokenizer(
            [clean_prompt(p) for p in check_prompts(prompts)], padding="max_length", truncation=True,
            max_length=self.text_len, add_special_tokens=True, return_tensors="pt",
        )
        return batch.input_ids, batch.attention_mask

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        prompts = check_prompts(prompts)
        outs = []
        for start in range(0, len(prompts), self.batch_size):
            ids, mask = self.tokenize(prompts[start : start + self.batch_size])
            ids, mask = ids.to(self.device), mask.to(self.device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            lengths = mask.gt(0).sum(dim=1)
            keep = torch.arange(self.text_len, device=self.device)[None, :] < lengths[:, None]
            outs.append(hidden * keep[..., None].to(hidden.dtype))
        return torch.cat(outs)


# ----------------------------------------------------------------------------------------------
# On-disk cache


class EmbeddingCache:
    """One safetensors file per (prompt, encoder identity) under ``root``.

    The key is the SHA-256 of the prompt text and the encoder's :attr:`TextEncoder.identity` (which
    covers the weights file, tokenizer, text_len and dtype). Files hold only the rows before the
    trailing zero padding and are re-padded on load. Writes go to a temporary file in the same folder
    followed by ``os.replace``, so concurrent sweep jobs never read a half-written entry.
    """

    FORMAT = "1"

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(prompt: str, identity: str) -> str:
        payload = json.dumps({"prompt": prompt, "encoder": identity}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, prompt: str, identity: str) -> Path:
        return self.root / f"{self.key(prompt, identity)}.safetensors"

    def get(self, prompt: str, identity: str, text_len: int) -> torch.Tensor | None:
        from safetensors import safe_open

        path = self.path(prompt, identity)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                rows = f.get_tensor("embedding")
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss and gets rewritten
            self.misses += 1
            return None
        if meta.get("prompt") != prompt or meta.get("encoder") != identity or int(meta.get("text_len", -1)) != text_len:
            self.misses += 1
            return None
        self.hits += 1
        out = rows.new_zeros(text_len, rows.shape[1])
        out[: rows.shape[0]] = rows
        return out

    def put(self, prompt: str, identity: str, embedding: torch.Tensor) -> Path:
        from safetensors.torch import save_file

        text_len = embedding.shape[0]
        nonzero = embedding.abs().sum(dim=1).nonzero()
        rows = int(nonzero.max()) + 1 if len(nonzero) else 0
        meta = {"prompt": prompt, "encoder": identity, "text_len": str(text_len), "format": self.FORMAT}
        path = self.path(prompt, identity)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem[:16]}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({"embedding": embedding[:rows].detach().cpu().contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


class CachedTextEncoder:
    """Any :class:`TextEncoder` behind an :class:`EmbeddingCache`: each prompt is encoded once.

    Misses in a batch are encoded together (duplicates once); hits never touch the inner encoder,
    so a lazily loaded model is not even built when every prompt is cached.
    """

    def __init__(self, encoder: TextEncoder, cache: EmbeddingCache | str | Path):
        self.encoder = encoder
        self.cache = cache if isinstance(cache, EmbeddingCache) else EmbeddingCache(cache)

    @property
    def text_len(self) -> int:
        return self.encoder.text_len

    @property
    def text_dim(self) -> int:
        return self.encoder.text_dim

    @property
    def identity(self) -> str:
        return self.encoder.identity

    def encode(self, prompts: list[str]) -> torch.Tensor:
        prompts = check_prompts(prompts)
        identity, text_len = self.identity, self.text_len
        found: dict[str, torch.Tensor] = {}
        for p in dict.fromkeys(prompts):
            hit = self.cache.get(p, identity, text_len)
            if hit is not None:
                found[p] = hit
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            fresh = self.encoder.encode(missing)
            for p, emb in zip(missing, fresh, strict=True):
                self.cache.put(p, identity, emb)
                found[p] = emb
        return torch.stack([found[p] for p in prompts])


def text_encoder_for(
    text_len: int,
    text_dim: int,
    weights: str | Path | None = None,
    tokenizer: str | Path | None = None,
    cache_dir: str | Path | None = None,
    seed: int = 0,
    **umt5_kwargs,
) -> TextEncoder:
    """The encoder a run asks for: umT5 when ``weights`` is given, else the random stand-in.

    ``text_len``/``text_dim`` come from the backbone's ``ModelConfig``; a umT5 checkpoint whose width
    differs from ``text_dim`` is rejected here rather than deep inside the backbone.
    """
    if weights is None:
        encoder: TextEncoder = RandomTextEncoder(text_len, text_dim, seed)
    else:
        if tokenizer is None:
            raise ConfigError("a umT5 checkpoint needs a tokenizer folder too: pass tokenizer=<local google/umt5-xxl>")
        encoder = UMT5TextEncoder(weights, tokenizer, text_len=text_len, **umt5_kwargs)
        if encoder.text_dim != text_dim:
            raise ConfigError(
                f"{weights}: encoder width {encoder.text_dim} differs from the backbone's text_dim {text_dim}; "
                "use the text encoder the backbone was trained with"
            )
    return CachedTextEncoder(encoder, cache_dir) if cache_dir is not None else encoder
