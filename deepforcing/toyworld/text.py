"""The toy world's text conditioner: one token per word, from a fixed table over the world's vocabulary.

Each word becomes a row of ``text_dim`` values: a one-hot of the word in
:data:`~deepforcing.toyworld.world.VOCABULARY`, then a one-hot of the object phrase it belongs to
("a red disc" is phrase 0, "a blue square" phrase 1, ...; the rest of the sentence is the last slot),
so the backbone can tell which colour goes with which shape. Rows after the prompt's words are zero,
as the real encoders pad. A word outside the vocabulary is a ConfigError naming it. Same
:class:`~deepforcing.text.TextEncoder` interface as umT5 (``text_len``, ``text_dim``, ``identity``,
``encode``).
"""

from __future__ import annotations

import torch

from deepforcing.errors import ConfigError
from deepforcing.text import check_prompts
from deepforcing.toyworld.world import MAX_OBJECTS, SHAPES, VOCABULARY, parse_prompt, words

SLOTS = MAX_OBJECTS + 1  # one per object phrase, one for the rest


def min_text_dim() -> int:
    return len(VOCABULARY) + SLOTS


class ToyTextEncoder:
    def __init__(self, text_len: int, text_dim: int):
        if text_dim < min_text_dim():
            raise ConfigError(f"the toy text encoder needs text_dim >= {min_text_dim()} "
                              f"({len(VOCABULARY)} words + {SLOTS} phrase slots), got {text_dim}")
        self.text_len, self.text_dim = text_len, text_dim
        self.index = {w: i for i, w in enumerate(VOCABULARY)}

    @property
    def identity(self) -> str:
        return f"toy:vocab={','.join(VOCABULARY)}:slots={SLOTS}:text_len={self.text_len}:text_dim={self.text_dim}"

    def encode(self, prompts: list[str]) -> torch.Tensor:
        prompts = check_prompts(prompts)
        out = torch.zeros(len(prompts), self.text_len, self.text_dim)
        for b, p in enumerate(prompts):
            parse_prompt(p)  # unknown words and malformed prompts: a clear error
            ws = words(p)
            if len(ws) > self.text_len:
                raise ConfigError(f"prompt {p!r} has {len(ws)} words; the toy text encoder takes {self.text_len}")
            phrase, slot = 0, [MAX_OBJECTS] * len(ws)
            for i, w in enumerate(ws):  # "a <colour> <shape>": the three words share the object's slot
                if w in SHAPES:
                    for j in range(max(0, i - 2), i + 1):
                        slot[j] = phrase
                    phrase += 1
            for i, w in enumerate(ws):
                out[b, i, self.index[w]] = 1.0
                out[b, i, len(VOCABULARY) + slot[i]] = 1.0
        return out
