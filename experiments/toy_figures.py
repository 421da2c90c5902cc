"""Frame strips of a toy-world sweep: one row per policy, frames at multiples of the training length.

    python3 experiments/toy_figures.py results/toy_long --out docs/toyworld --prompts 0 1

Reads each point's stored clean latents (``videos/*.latents.safetensors``) and decodes them with the toy
codec, so the pictures are the frames the metrics scored. Writes ``strip_<prompt index>.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORDER = ("rolling_window", "self_forcing_sink", "deep_sink", "deep_forcing", "longlive")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="results/<sweep> folder of a toy-model sweep")
    ap.add_argument("--out", default="docs/toyworld")
    ap.add_argument("--prompts", type=int, nargs="+", default=[0])
    ap.add_argument("--train-frames", type=int, default=21, help="training length (latent frames)")
    ap.add_argument("--multiples", type=float, nargs="+", default=[0, 0.5, 1, 2, 3, 5, 7, 10])
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image, ImageDraw

    from deepforcing.model import preset
    from deepforcing.store import load_latents, read_record
    from deepforcing.toyworld.codec import ToyCodec

    codec = ToyCodec.from_config(preset("toy"))
    points = {}
    for d in sorted(Path(args.sweep).iterdir()):
        if (d / "point.json").exists() and (d / "summary.json").exists():
            points[read_record(d / "point.json", "point")["method"]] = d
    methods = [m for m in ORDER if m in points] + [m for m in points if m not in ORDER]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scale, gap, label_w = 3, 4, 130
    for p in args.prompts:
        rows, prompt = [], None
        for m in methods:
            lat_path = sorted((points[m] / "videos").glob(f"{p:04d}_*.latents.safetensors"))[0]
            lat, rec = load_latents(lat_path)
            prompt = rec["prompt"]
            frames = codec.decode(lat[None].float(), "uint8")[0].permute(0, 2, 3, 1).numpy()
            idx = [min(len(frames) - 1, round(k * args.train_frames)) for k in args.multiples]
            rows.append((m, frames[idx], idx))
        h, w = rows[0][1].shape[1:3]
        cols = len(rows[0][1])
        img = Image.new("RGB", (label_w + cols * (w * scale + gap), 18 + len(rows) * (h * scale + gap)), "white")
        draw = ImageDraw.Draw(img)
        for j, i in enumerate(rows[0][2]):
            draw.text((label_w + j * (w * scale + gap), 2), f"frame {i}", fill="black")
        for r, (m, frames, _) in enumerate(rows):
            y = 18 + r * (h * scale + gap)
            draw.text((4, y + h * scale // 2 - 6), m, fill="black")
            for j, f in enumerate(frames):
                tile = Image.fromarray(np.ascontiguousarray(f)).resize((w * scale, h * scale), Image.NEAREST)
                img.paste(tile, (label_w + j * (w * scale + gap), y))
        path = out / f"strip_{p}.png"
        img.save(path)
        print(f"{path}: {prompt}")


if __name__ == "__main__":
    main()
