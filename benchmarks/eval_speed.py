"""Speed of our metrics against vbench 0.1.5's own functions, on the same clips, in one run.

Both paths score the same synthetic lossless mp4s with the same weights (random weights in VBench's
formats, or real ones with --cache-dir). Three workloads:

* ``short``: every video scored whole (plain VBench): vbench's ``compute_<dim>`` on the files vs our
  ``Scorer`` (decode once, shared frames, batching, resident models).
* ``long``: VBench-Long 2-s clips plus the 5-s drift series. vbench has to score every clip file of the
  video and of each segment (written losslessly here; writing time is not counted); we score all of it
  from one decode with per-frame caches.
* ``full`` (default): everything our scorer reports for a video by default -- the VBench-Long score, the
  5-s drift series, FramePack's 15 % start/end windows and BlockVid's 10 VDE chunks; with vbench every one
  of those windows is its own set of clip files.

Prints per-dimension times, the largest |ours - vbench| (VBench's scale; imaging /100), and the speed ratio.

    python benchmarks/eval_speed.py                       # CPU defaults, a few minutes
    python benchmarks/eval_speed.py --workload short --device cuda --frames 80 --size 480 832
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "metrics"))

DEFAULT_DIMS = ["temporal_flickering", "background_consistency", "aesthetic_quality", "imaging_quality",
                "motion_smoothness", "dynamic_degree"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["short", "long", "full"], default="full")
    ap.add_argument("--dims", nargs="+", default=DEFAULT_DIMS)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=[128, 128], metavar=("H", "W"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", default=None, help="real VBench weights; default: random weights in a temp dir")
    ap.add_argument("--full-size", action="store_true", help="random CLIP towers at full size (default reduced)")
    ap.add_argument("--segment-seconds", type=float, default=5.0)
    args = ap.parse_args()

    import torch
    from metrics_helpers import RandomWeights, synthetic_frames

    from deepforcing.metrics import drift, protocol
    from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig
    from deepforcing.metrics.reference import vbench_scores
    from deepforcing.metrics.scorer import Scorer
    from deepforcing.metrics.specs import SPECS
    from deepforcing.metrics.video import write_lossless
    from deepforcing.metrics.weight_files import resolve

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tmp = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    if args.cache_dir:
        files_for = lambda d: resolve(d, args.cache_dir)  # noqa: E731
    else:
        rw = RandomWeights(tmp / "cache", full_size=args.full_size)
        files_for = rw.files
    dino_repo = os.environ.get("DEEPFORCING_DINO_REPO")
    dims = [d for d in args.dims if SPECS[d].vbench_name and (d != "subject_consistency" or dino_repo)]
    prompts = ["a red square moves over a textured wall"] * args.videos
    h, w = args.size
    videos = [str(write_lossless(tmp / f"v{i}.mp4", synthetic_frames(args.frames, h, w, i, speed=3 + 2 * i),
                                 args.fps)) for i in range(args.videos)]
    files = {d: files_for(d) for d in dims}  # write weights before timing

    # work units for the reference: whole videos, or every clip of the video and of each drift segment
    units: list[tuple[int, str, protocol.Span]] = []  # (video, kind, span)
    for vi in range(args.videos):
        full = protocol.Span(0, args.frames)
        if args.workload == "short":
            units.append((vi, "video", full))
        else:
            for seg in [full] + protocol.segments(args.frames, args.fps, args.segment_seconds):
                units.append((vi, "video" if seg == full else f"seg{seg.start}", seg))
            if args.workload == "full":
                for k, e in enumerate(protocol.edge_windows(args.frames, 0.15)):
                    units.append((vi, f"edge{k}", e))
                for k, c in enumerate(protocol.equal_chunks(args.frames, 10)):
                    units.append((vi, f"vde{k}", c))

    print(f"workload={args.workload} videos={args.videos} frames={args.frames} @ {args.fps} fps, {h}x{w}, "
          f"device={args.device}, dims={dims}")
    rows, t_ref_total, t_ours_total, worst = [], 0.0, 0.0, 0.0
    ref_scores: dict[str, dict] = {}
    for d in dims:
        secs = None if args.workload == "short" else 2.0
        jobs, paths = [], []
        for vi, kind, span in units:
            from deepforcing.metrics.video import decode

            frames = decode(videos[vi]).frames
            for k, c in enumerate(protocol.clips_for(span, args.fps, secs if secs else None)):
                p = tmp / "clips" / f"{d}_{vi}_{kind}_{k}.mp4"
                if not p.exists():
                    write_lossless(p, frames[c.start:c.end], args.fps)
                jobs.append((vi, kind))
                paths.append(str(p))
        t0 = time.perf_counter()
        ref = vbench_scores(d, paths, files[d], args.device, prompts=[prompts[0]] * len(paths),
                            dino_repo=dino_repo)
        t_ref = time.perf_counter() - t0
        if d == "imaging_quality":
            ref = [r / 100 for r in ref]
        agg: dict[tuple[int, str], list[float]] = {}
        for j, r in zip(jobs, ref, strict=True):
            agg.setdefault(j, []).append(r)
        ref_scores[d] = {k: sum(v) / len(v) for k, v in agg.items()}
        rows.append([d, t_ref])
        t_ref_total += t_ref

    cfg = EvalConfig(dimensions=tuple(dims), device=args.device, progress=False,
                     weights={k: str(v) for fs in files.values() for k, v in fs.items()},
                     clips=ClipProtocol(enabled=args.workload != "short"),
                     drift=DriftConfig(enabled=args.workload != "short", segment_seconds=args.segment_seconds,
                                       vde=args.workload == "full", edge_windows=args.workload == "full"))
    t0 = time.perf_counter()
    scorer = Scorer(cfg)
    results = [scorer.score_file(v, prompts[i]) for i, v in enumerate(videos)]
    t_ours_total = time.perf_counter() - t0
    load = t_ours_total - sum(r.decode_seconds + sum(x.seconds for x in r.dimensions.values()) for r in results)
    for row in rows:
        d = row[0]
        t_ours = sum(r.dimensions[d].seconds for r in results)
        diff = 0.0
        for vi, r in enumerate(results):
            dr = r.dimensions[d]
            assert dr.error is None, dr.error
            diff = max(diff, abs(dr.score - ref_scores[d][(vi, "video")]))
            for seg in dr.segments:
                key = (vi, f"seg{seg['start_frame']}")
                if key in ref_scores[d]:
                    diff = max(diff, abs(seg["score"] - ref_scores[d][key]))
            if args.workload == "full":
                for k, name in enumerate(("edge_start", "edge_end")):
                    diff = max(diff, abs(dr.drift[name] - ref_scores[d][(vi, f"edge{k}")]))
                ref_vde = drift.safe_vde([ref_scores[d][(vi, f"vde{k}")] for k in range(10)], "linear")
                if ref_vde is not None or dr.drift.get("vde") is not None:
                    diff = max(diff, abs(dr.drift["vde"] - ref_vde))
        worst = max(worst, diff)
        row += [t_ours, diff]
    print(f"{'dimension':<24} {'vbench s':>9} {'ours s':>8} {'ratio':>6} {'max|diff|':>10}")
    for d, tr, to, df in rows:
        print(f"{d:<24} {tr:9.2f} {to:8.2f} {tr / max(to, 1e-9):6.1f} {df:10.2e}")
    print(f"{'(ours: model loading + decode)':<24} {'':>9} {load + sum(r.decode_seconds for r in results):8.2f}")
    print(f"TOTAL vbench {t_ref_total:.1f} s, ours {t_ours_total:.1f} s -> speed ratio "
          f"{t_ref_total / t_ours_total:.2f}x; largest score difference {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
