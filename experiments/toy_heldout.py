"""Held-out accuracy of the toy model inside its training length.

    OMP_NUM_THREADS=1 python3 experiments/toy_heldout.py --scenes 32 --out results/toy_heldout

For each held-out scene (seeds from deepforcing.toyworld.train.HELDOUT_SEED_BASE, never trained on) the
model generates one training length (21 latent frames) from the scene's prompt with the engine and the
preset's steps; every decoded frame is read with the world's rules and compared with the scene's truth:
object count, object colours, background. The same rules on the scene's own frames give the ceiling
(objects that hide each other lower it). Writes ``heldout.json``, ``heldout.md`` and a frame strip.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def frame_checks(frames, spec) -> dict[str, list[bool]]:
    from deepforcing.toyworld.rules import read_frame

    out = {"count": [], "colours": [], "both": [], "background": []}
    for f in frames:
        r = read_frame(f)
        count = r.count == len(spec.objects)
        colours = r.colours == spec.colours and r.background == spec.background
        out["count"].append(count)
        out["colours"].append(colours)
        out["both"].append(count and colours)
        out["background"].append(r.background == spec.background)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=32)
    ap.add_argument("--frames", type=int, default=21, help="latent frames (the training length)")
    ap.add_argument("--checkpoint", default=None, help="toy checkpoint folder (default: the packaged one)")
    ap.add_argument("--out", default="results/toy_heldout")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="offset from HELDOUT_SEED_BASE of the first scene (the sampler was tuned on scenes from "
                         "offset 100000, never on the reported ones from 0)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    ap.add_argument("--shift", type=float, default=None, help="timestep shift (default: the preset's)")
    ap.add_argument("--sampler", default=None, choices=("euler", "renoise"),
                    help="the engine's sampler (default: the preset's)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from deepforcing.pipeline import ModelSpec, build_backbone
    from deepforcing.toyworld.samples import rollout_frames, save_png, strip
    from deepforcing.toyworld.train import HELDOUT_SEED_BASE, NUM_TRAIN_TIMESTEPS
    from deepforcing.toyworld.world import Scene

    torch.set_num_threads(1)
    model = build_backbone(ModelSpec(kind="toy", config="toy", checkpoint=args.checkpoint, device="cpu"))
    size = model.cfg.latent_hw[0] * model.cfg.vae_stride[1]
    gen = {"count": [], "colours": [], "both": [], "background": []}
    truth = {"count": [], "colours": [], "both": [], "background": []}
    per_scene, rows = [], []
    steps = None  # the preset's
    if args.steps:  # evenly spaced nominal timesteps T, ..., T / steps, as the preset's
        steps = [int(NUM_TRAIN_TIMESTEPS - k * NUM_TRAIN_TIMESTEPS / args.steps) for k in range(args.steps)]
    for i in range(args.scenes):
        sc = Scene(HELDOUT_SEED_BASE + args.first_seed + i, size=size)
        with torch.no_grad():
            frames = rollout_frames(model, sc.prompt, args.frames, seed=args.first_seed + i, steps=steps,
                                    shift=args.shift, sampler=args.sampler)
        g, t = frame_checks(frames, sc.spec), frame_checks(sc.frames(len(frames)), sc.spec)
        for k in gen:
            gen[k] += g[k]
            truth[k] += t[k]
        per_scene.append({"seed": HELDOUT_SEED_BASE + args.first_seed + i, "prompt": sc.prompt,
                          **{f"generated_{k}": float(np.mean(v)) for k, v in g.items()}})
        if i < 8:
            rows += [sc.frames(len(frames)), frames]
        print(f"{i:3d} both {np.mean(g['both']):.2f}  {sc.prompt}", flush=True)
    summary = {
        "scenes": args.scenes, "frames_per_scene": args.frames,
        "generated": {k: float(np.mean(v)) for k, v in gen.items()},
        "ground_truth": {k: float(np.mean(v)) for k, v in truth.items()},
        "per_scene": per_scene,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| frames with the right ... | generated | ground truth (ceiling) |", "|---|---|---|"]
    for k, name in (("count", "object count"), ("colours", "colours and background"), ("both", "count and colours"),
                    ("background", "background")):
        lines.append(f"| {name} | {100 * summary['generated'][k]:.1f} % | {100 * summary['ground_truth'][k]:.1f} % |")
    (out / "heldout.md").write_text("\n".join(lines) + "\n")
    save_png(strip(rows, every=2), out / "heldout_strip.png")
    print("\n".join(lines))
    return summary


if __name__ == "__main__":
    main()
