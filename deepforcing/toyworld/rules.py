"""The toy world's rules, applied to decoded frames: what a frame shows, read back without learned weights.

Every pixel is assigned its nearest world colour (object palette or background, Euclidean RGB). Object
pixels of one colour that touch (4-neighbourhood) form a blob; a blob of at least :data:`MIN_AREA`
pixels counts as an object. From that:

- object count: the number of such blobs (two blobs of one colour are two objects);
- colours: the set of object colours seen, and the background (the most common background colour);
- position: a colour's centroid when it forms exactly one blob;
- purity: the fraction of pixels within :data:`PURE_DISTANCE` of their nearest world colour (the world
  draws nothing else, so blur, noise and smeared edges lower it);
- histogram: the fraction of pixels of each world colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepforcing.toyworld.world import BACKGROUNDS, OBJECT_SIZE, PALETTE

COLOURS = (*PALETTE, *BACKGROUNDS)
RGB_TABLE = np.array([*PALETTE.values(), *BACKGROUNDS.values()], dtype=np.float64)
NUM_OBJECT_COLOURS = len(PALETTE)
# A blob counts as an object from a third of a whole object's area (objects may overlap).
MIN_AREA = (OBJECT_SIZE * OBJECT_SIZE) // 3
# A pixel is "pure" within this RGB distance of a world colour (the codec round trip is within 2).
PURE_DISTANCE = 40.0


@dataclass(frozen=True)
class FrameReading:
    count: int
    colours: frozenset[str]
    background: str
    centroids: dict[str, tuple[float, float]]  # colour -> (x, y), for colours forming one blob
    purity: float
    histogram: np.ndarray  # [len(COLOURS)] fractions


def nearest(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: index into :data:`COLOURS` of the nearest world colour, and the distance to it."""
    d = np.linalg.norm(frame.astype(np.float64)[..., None, :] - RGB_TABLE, axis=-1)
    idx = d.argmin(-1)
    return idx, np.take_along_axis(d, idx[..., None], -1)[..., 0]


def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the 4-connected components of ``mask``."""
    h, w = mask.shape
    big = h * w
    lab = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        p = np.pad(lab, 1, constant_values=big)
        m = np.minimum.reduce([lab, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        m = np.where(mask, m, big)
        if np.array_equal(m, lab):
            break
        lab = m
    return [lab == v for v in np.unique(lab[mask])]


def read_frame(frame: np.ndarray) -> FrameReading:
    idx, dist = nearest(frame)
    count, colours, centroids = 0, set(), {}
    for c, name in enumerate(COLOURS[:NUM_OBJECT_COLOURS]):
        found = [b for b in blobs(idx == c) if b.sum() >= MIN_AREA]
        count += len(found)
        if found:
            colours.add(name)
        if len(found) == 1:
            ys, xs = np.nonzero(found[0])
            centroids[name] = (float(xs.mean() + 0.5), float(ys.mean() + 0.5))
    hist = np.bincount(idx.ravel(), minlength=len(COLOURS)) / idx.size
    background = COLOURS[NUM_OBJECT_COLOURS + int(hist[NUM_OBJECT_COLOURS:].argmax())]
    return FrameReading(count, frozenset(colours), background, centroids, float((dist <= PURE_DISTANCE).mean()), hist)


def speeds(a: FrameReading, b: FrameReading, max_step: float) -> list[float]:
    """Centroid displacements (pixels) of colours seen as one blob in both frames; jumps over
    ``max_step`` (a blob lost and found elsewhere) are left out."""
    out = []
    for c in a.centroids.keys() & b.centroids.keys():
        (x0, y0), (x1, y1) = a.centroids[c], b.centroids[c]
        d = float(np.hypot(x1 - x0, y1 - y0))
        if d <= max_step:
            out.append(d)
    return out
