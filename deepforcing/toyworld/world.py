"""A procedural world of bouncing shapes whose truth is known for every frame.

A scene is drawn from a seed: a background colour, one to ``MAX_OBJECTS`` objects, each a shape in a
colour of the palette (no two objects share a colour, so a colour names one object) and a velocity of
the scene's speed class in a random direction; objects move in straight lines and bounce off the borders
(they pass over each other; later objects are drawn on top). The k-th object the prompt names starts at
the k-th of :data:`START_PLACES`, so the first frame is what the prompt says and only the motion is left
to chance (with random start places a model of CPU size spends its training on where objects might be).
Frames are ``size x size`` RGB at ``FPS``.

Everything a frame shows comes from :data:`PALETTE` and :data:`BACKGROUNDS`, drawn with hard edges, so
the world's rules can read any decoded frame back (:mod:`deepforcing.toyworld.rules`).

Each scene has a prompt generated from it (``"a red disc and a blue square bounce slowly on a gray
background"``) and :func:`parse_prompt` reads a prompt back into what it asks for; a word outside the
world's vocabulary is a :class:`~deepforcing.errors.ConfigError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from deepforcing.errors import ConfigError

FPS = 16
SIZE = 24
MAX_OBJECTS = 3
# Object colours (RGB) and background colours: far apart, so every pixel has one nearest colour.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 230),
    "yellow": (235, 210, 40),
    "white": (240, 240, 240),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "gray": (120, 120, 120),
    "brown": (120, 70, 30),
}
SHAPES = ("disc", "square")
OBJECT_SIZE = 6  # disc diameter and square side, pixels
# Where the objects start, in prompt order, as fractions of the frame (x, y): apart by more than an object.
START_PLACES = ((0.25, 0.25), (0.75, 0.5), (0.3, 0.75))
# Speed classes: |velocity| in pixels per frame is drawn uniformly from the range.
SPEEDS: dict[str, tuple[float, float]] = {"slowly": (0.4, 0.6), "quickly": (0.8, 1.1)}
# Words of the grammar besides colours, backgrounds, shapes and speeds.
GRAMMAR_WORDS = ("a", "and", "bounce", "bounces", "on", "background")
VOCABULARY = tuple(dict.fromkeys((*GRAMMAR_WORDS, *PALETTE, *BACKGROUNDS, *SHAPES, *SPEEDS)))


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str


@dataclass(frozen=True)
class SceneSpec:
    """What a prompt asks for."""

    objects: tuple[ObjectSpec, ...]
    speed: str
    background: str

    @property
    def colours(self) -> frozenset[str]:
        return frozenset(o.colour for o in self.objects)

    def prompt(self) -> str:
        names = [f"a {o.colour} {o.shape}" for o in self.objects]
        subject = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        verb = "bounces" if len(names) == 1 else "bounce"
        return f"{subject} {verb} {self.speed} on a {self.background} background"


@dataclass(frozen=True)
class ObjectState:
    colour: str
    shape: str
    x: float  # centre, pixels (x to the right, y down)
    y: float
    vx: float  # pixels per frame
    vy: float


def words(prompt: str) -> list[str]:
    """The prompt's words, lower-case, punctuation dropped."""
    return [w for w in re.split(r"[^a-z]+", prompt.lower()) if w]


def parse_prompt(prompt: str) -> SceneSpec:
    """The scene a prompt of the world's grammar asks for; ConfigError naming any unknown word."""
    ws = words(prompt)
    unknown = sorted({w for w in ws if w not in VOCABULARY})
    if unknown:
        raise ConfigError(
            f"prompt {prompt!r} uses word(s) outside the toy world's vocabulary: {', '.join(unknown)}. "
            f"Known words: {', '.join(VOCABULARY)}"
        )
    objects, speed, background = [], None, None
    for i, w in enumerate(ws):
        if w in SHAPES:
            colour = ws[i - 1] if i > 0 else None
            if colour not in PALETTE:
                raise ConfigError(f"prompt {prompt!r}: the {w} at word {i} has no colour before it")
            objects.append(ObjectSpec(colour, w))
        elif w in SPEEDS:
            speed = w
        elif w in BACKGROUNDS:
            background = w
    if not objects or speed is None or background is None:
        raise ConfigError(f"prompt {prompt!r}: a toy-world prompt names objects, a speed and a background, "
                          f"e.g. {SceneSpec((ObjectSpec('red', 'disc'),), 'slowly', 'gray').prompt()!r}")
    if len(objects) > MAX_OBJECTS or len({o.colour for o in objects}) != len(objects):
        raise ConfigError(f"prompt {prompt!r}: at most {MAX_OBJECTS} objects, each in its own colour")
    return SceneSpec(tuple(objects), speed, background)


class Scene:
    """One procedural scene: its spec, initial object states, and frames / truth for any length."""

    def __init__(self, seed: int, size: int = SIZE, max_objects: int = MAX_OBJECTS):
        rng = np.random.default_rng(seed)
        self.seed, self.size = seed, size
        n = int(rng.integers(1, max_objects + 1))
        colours = rng.choice(list(PALETTE), size=n, replace=False)
        shapes = rng.choice(SHAPES, size=n)
        speed = str(rng.choice(list(SPEEDS)))
        background = str(rng.choice(list(BACKGROUNDS)))
        self.spec = SceneSpec(tuple(ObjectSpec(str(c), str(s)) for c, s in zip(colours, shapes, strict=True)),
                              speed, background)
        lo, hi = OBJECT_SIZE / 2, size - OBJECT_SIZE / 2
        states = []
        for o, (fx, fy) in zip(self.spec.objects, START_PLACES, strict=False):
            x, y = min(max(fx * size, lo), hi), min(max(fy * size, lo), hi)
            v = rng.uniform(*SPEEDS[speed])
            angle = rng.uniform(0, 2 * math.pi)
            states.append(ObjectState(o.colour, o.shape, float(x), float(y), v * math.cos(angle), v * math.sin(angle)))
        self.initial = tuple(states)

    @property
    def prompt(self) -> str:
        return self.spec.prompt()

    def states(self, num_frames: int) -> list[tuple[ObjectState, ...]]:
        """Object states of frames ``0 .. num_frames-1`` (the ground truth)."""
        lo, hi = OBJECT_SIZE / 2, self.size - OBJECT_SIZE / 2
        out, cur = [], list(self.initial)
        for _ in range(num_frames):
            out.append(tuple(cur))
            nxt = []
            for s in cur:
                x, vx = _bounce(s.x + s.vx, s.vx, lo, hi)
                y, vy = _bounce(s.y + s.vy, s.vy, lo, hi)
                nxt.append(ObjectState(s.colour, s.shape, x, y, vx, vy))
            cur = nxt
        return out

    def frames(self, num_frames: int) -> np.ndarray:
        """uint8 ``[num_frames, size, size, 3]``."""
        return np.stack([render(st, self.spec.background, self.size) for st in self.states(num_frames)])


def _bounce(p: float, v: float, lo: float, hi: float) -> tuple[float, float]:
    if p < lo:
        return 2 * lo - p, -v
    if p > hi:
        return 2 * hi - p, -v
    return p, v


def object_mask(shape: str, x: float, y: float, size: int) -> np.ndarray:
    """Pixels (centres at integer + 0.5) covered by a shape centred at (x, y)."""
    c = np.arange(size) + 0.5
    dx, dy = c[None, :] - x, c[:, None] - y
    half = OBJECT_SIZE / 2
    if shape == "disc":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    raise ConfigError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def render(states: tuple[ObjectState, ...], background: str, size: int = SIZE) -> np.ndarray:
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUNDS[background]
    for s in states:
        img[object_mask(s.shape, s.x, s.y, size)] = PALETTE[s.colour]
    return img
