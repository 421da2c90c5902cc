"""Peak memory against video length: does a long rollout fit in the memory of a short one?

    python benchmarks/memory.py                       # tiny model, 1, 2, 5 and 10 minutes at 16 fps
    python benchmarks/memory.py --minutes 1 10 --modes flicker+drift --unbounded

Each (length, mode) runs ``deepforcing.pipeline.generate_video`` -- tiny model (random weights, CPU),
streaming VAE decode, mp4 writer, streaming scorer -- in its own process; its peak RSS is the child's
``ru_maxrss`` as ``os.wait4`` reports it (the child skips interpreter shutdown, where torch briefly adds
~130 MiB whatever the video). The length is turned into latent frames as ``length_s`` does
(``deepforcing.knobs.latent_frames_for_seconds``). Modes:

* ``none``: no metrics (generation, decoding and the mp4 writer only);
* ``flicker``: temporal flickering on VBench-Long's 2-s clips, no drift windows;
* ``flicker+drift``: what ``python run.py length_s=...`` scores by default (temporal flickering; 5-s
  segments, FramePack edge windows and 10 VDE chunks on);
* ``--unbounded`` adds ``flicker+drift`` with a streaming scorer not told the length, which holds every
  frame until the end (the behaviour before the scorer released frames).

The goal: the 10-minute run's peak within 10 % of the 1-minute one's (ratio <= 1.10).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("none", "flicker", "flicker+drift")


def child(seconds: float, mode: str, fps: float, method: str, threads: int) -> dict:
    """One rollout in this process; returns what the parent prints."""
    import resource

    import torch

    torch.set_num_threads(threads)
    from deepforcing.engine import RolloutConfig
    from deepforcing.knobs import latent_frames_for_seconds
    from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
    from deepforcing.metrics.scorer import Scorer, StreamingScorer
    from deepforcing.model import preset
    from deepforcing.pipeline import ModelSpec, PointConfig, Runtime, generate_video

    base = mode.removesuffix(":unbounded")
    cfg = preset("tiny")
    rc = RolloutConfig()
    latents = latent_frames_for_seconds(seconds, fps, cfg.vae_stride[0], rc.chunk_frames)
    metrics = () if base == "none" else ("temporal_flickering",)
    point = PointConfig(model=ModelSpec(kind="tiny", device="cpu"), method=method, prompts=("a fox in the snow",),
                        rollout=RolloutConfig(num_frames=latents), fps=fps, metrics=metrics)

    class NoDrift(Runtime):
        def scorer(self, metrics, segment_seconds, clips=None):
            return self._get("metrics", ("no drift", metrics), lambda: Scorer(EvalConfig(
                dimensions=metrics, drift=DriftConfig(enabled=False), clips=clips or ClipProtocol(), progress=False)))

    if mode.endswith(":unbounded"):  # a scorer that does not know the length keeps every frame
        init = StreamingScorer.__init__

        def without_length(self, *a, num_frames=None, **k):
            init(self, *a, **k)

        StreamingScorer.__init__ = without_length
    runtime = NoDrift() if base == "flicker" else Runtime()
    with tempfile.TemporaryDirectory() as d:
        rec = generate_video(runtime, point, point.prompts[0], Path(d) / "v.mp4", "v")
    dim = ((rec["metrics"] or {}).get("dimensions") or {}).get("temporal_flickering") or {}
    return {"latents": latents, "frames": rec["frames"], "generate_s": rec["seconds"], "score": dim.get("score"),
            "error": dim.get("error"), "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def measure(seconds: float, mode: str, args) -> dict:
    """Run ``child`` in a fresh interpreter; peak RSS from the kernel's accounting of that process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--child", str(seconds), mode, "--fps", str(args.fps), "--method", args.method,
           "--threads", str(args.threads)]
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE if args.quiet else None, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"{mode} at {seconds:g} s failed ({proc.returncode}): {err[-2000:]}")
        if proc.stderr:
            proc.stderr.close()
        out.seek(0)
        res = json.loads(out.read().strip().splitlines()[-1])
    return {**res, "peak_mib": usage.ru_maxrss / 1024, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--unbounded", action="store_true", help="add the scorer that is not told the length")
    ap.add_argument("--fps", type=float, default=16.0)
    ap.add_argument("--method", default="deep_forcing", help="policy preset (run.py's default: deep_forcing)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the tiny model is fastest on 1)")
    ap.add_argument("--quiet", action="store_true", help="hide the children's stderr (progress, warnings)")
    ap.add_argument("--child", nargs=2, metavar=("SECONDS", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(float(args.child[0]), args.child[1], args.fps, args.method, args.threads)), flush=True)
        os._exit(0)  # torch's interpreter shutdown adds a brief ~130 MiB that has nothing to do with the video

    modes = list(args.modes) + (["flicker+drift:unbounded"] if args.unbounded else [])
    rows = {}
    for m in args.minutes:
        for mode in modes:
            r = measure(60 * m, mode, args)
            rows[(m, mode)] = r
            print(f"  {m:g} min {mode}: peak {r['peak_mib']:.1f} MiB, {r['frames']} frames, "
                  f"{r['wall_s']:.1f} s", file=sys.stderr, flush=True)

    print(f"\nPeak RSS (MiB) per run, each in its own process: tiny model on CPU, {args.fps:g} fps, "
          f"method {args.method}, torch threads {args.threads}")
    head = ["length", "latents", "frames"] + modes
    table = []
    for m in args.minutes:
        r0 = rows[(m, modes[0])]
        table.append([f"{m:g} min", str(r0["latents"]), str(r0["frames"])]
                     + [f"{rows[(m, mode)]['peak_mib']:.1f}" for mode in modes])
    lo, hi = min(args.minutes), max(args.minutes)
    if lo != hi:
        table.append([f"{hi:g}/{lo:g} min", "", ""]
                     + [f"{rows[(hi, mode)]['peak_mib'] / rows[(lo, mode)]['peak_mib']:.3f}" for mode in modes])
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    for mode in modes:
        errs = {m: rows[(m, mode)]["error"] for m in args.minutes if rows[(m, mode)]["error"]}
        if errs:
            print(f"{mode}: scoring errors {errs}")
    if lo != hi:
        worst = max(rows[(hi, mode)]["peak_mib"] / rows[(lo, mode)]["peak_mib"] for mode in args.modes)
        print(f"goal: {hi:g}-min peak within 10 % of the {lo:g}-min peak -> worst ratio {worst:.3f} "
              f"({'met' if worst <= 1.10 else 'NOT met'}; bounded modes only)")


if __name__ == "__main__":
    main()
