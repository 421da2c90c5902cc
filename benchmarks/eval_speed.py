"""Speed of our metrics against vbench 0.1.5's own functions, on the same clips, in one run.

Both paths score the same synthetic lossless mp4s with the same weights (random weights in VBench's
formats, or real ones with --cache-dir). Workloads (``--workloads``, default ``short long``):

* ``short`` (plain VBench; default 2 videos x 32 frames): every video scored whole: vbench's
  ``compute_<dim>`` on the files vs our ``Scorer`` (decode once, batching, resident models).
* ``long`` (VBench-Long; default 2 videos x 96 frames): 2-s clips plus the 5-s drift series. vbench has to
  score every clip file of the video and of each segment (written losslessly here; writing time is not
  counted); we score all of it from one decode with per-frame caches.
* ``full``: ``long`` plus FramePack's 15 % start/end windows and BlockVid's 10 VDE chunks.

Per workload and dimension it prints vbench's time and ours (min and median over ``--repeat`` interleaved
repetitions: in each repetition every dimension runs on both sides, the side that goes first alternating),
the ratio vbench / ours of the minima and of the medians, and the largest |ours - vbench| over every
video, clip, segment and window (VBench's scale; imaging /100). A second table says where each side's time
goes: the part spent inside network forwards (top-level ``nn.Module`` calls, torchvision's transforms
excluded, timed on both sides by global forward hooks in every repetition) and the rest (decoding,
resizing, loading, Python), and the ratio ours could reach if everything but its forwards took no time
(vbench's total / our forward time). Model loading is included on both sides
in every repetition (``--warm`` keeps our models loaded between repetitions instead, as a process scoring
many videos does; vbench's functions always load). Module imports are done before timing. ``TOTAL``
compares the sum of vbench's times with one ``Scorer`` running every dimension (one decode, shared CLIP
features). ``--profile`` prints, per dimension, where our time goes (cProfile of the last repetition).

``short`` videos are H.264 yuv420p at CRF 23 (``--codec h264``, default: what the generation pipeline writes,
and what video generators publish), read by both sides from the same files; ``--codec lossless`` writes them
as lossless RGB H.264 instead (decoding them costs several times more on both sides). ``long`` and ``full``
cut each video into clip files for vbench, so there the videos and the clip files are always lossless RGB
H.264 and both sides see the same pixels (writing is not timed).

    python benchmarks/eval_speed.py                                  # CPU, short + long, 3 repetitions
    python benchmarks/eval_speed.py --workloads short --videos 5 --frames 160 --sizes 128x128 128x192
    python benchmarks/eval_speed.py --workloads short --device cuda --frames 80 --sizes 480x832

subject_consistency needs a clone of facebookresearch/dino for vbench's side: DEEPFORCING_DINO_REPO=<clone>.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "metrics"))

DEFAULT_DIMS = ["temporal_flickering", "subject_consistency", "background_consistency", "aesthetic_quality",
                "imaging_quality", "motion_smoothness", "dynamic_degree", "overall_consistency"]
DEFAULT_FRAMES = {"short": 32, "long": 96, "full": 96}


def _size(s: str) -> tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", choices=["short", "long", "full"], default=["short", "long"])
    ap.add_argument("--dims", nargs="+", default=DEFAULT_DIMS)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--frames", type=int, default=None,
                    help=f"frames per video (default per workload: {DEFAULT_FRAMES})")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--codec", choices=["h264", "lossless"], default="h264",
                    help="the videos: H.264 yuv420p CRF 23 as the pipeline writes (default) or lossless RGB H.264")
    ap.add_argument("--sizes", nargs="+", type=_size, default=[(128, 128)], metavar="HxW",
                    help="frame sizes, used by the videos in turn (default 128x128)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads, both sides (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="keep N other processes spinning on the CPU while timing (a busy machine; default 0)")
    ap.add_argument("--warm", action="store_true", help="keep our models loaded between repetitions")
    ap.add_argument("--profile", action="store_true", help="print where our time goes, per dimension")
    ap.add_argument("--cache-dir", default=None, help="real VBench weights; default: random weights in a temp dir")
    ap.add_argument("--full-size", action="store_true", help="random CLIP towers at full size (default reduced)")
    ap.add_argument("--segment-seconds", type=float, default=5.0)
    ap.add_argument("--gpu-autocast", choices=["bf16", "fp16"], default=None,
                    help="ours under torch.autocast on a GPU (max|diff| then measures its error against vbench)")
    ap.add_argument("--gpu-channels-last", action="store_true", help="ours with channels-last conv nets on a GPU")
    return ap.parse_args(argv)


class ForwardClock:
    """Wall time inside top-level network forwards: every ``nn.Module`` call that is not nested in another
    and is not one of torchvision's transforms (which are modules too). Global hooks, so vbench's code and ours
    are timed the same way without touching either."""

    def __init__(self):
        self.depth, self.t0, self.total = 0, 0.0, 0.0

    @staticmethod
    def _counts(m) -> bool:
        return not type(m).__module__.startswith("torchvision.transforms")

    def _pre(self, m, inputs):
        if self._counts(m):
            if self.depth == 0:
                self.t0 = time.perf_counter()
            self.depth += 1

    def _post(self, m, inputs, output):
        if self._counts(m):
            self.depth -= 1
            if self.depth == 0:
                self.total += time.perf_counter() - self.t0

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.depth, self.total = 0, 0.0
        self._hooks = [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()


def _spin() -> None:
    while True:
        pass


def start_busy(n: int) -> list:
    """``n`` processes that keep one core each busy (pure Python, no threads of their own), as other jobs on a
    shared machine do; terminated by the caller."""
    import multiprocessing as mp

    procs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def write_video(path: Path, frames, fps: int, codec: str) -> str:
    from deepforcing.metrics.video import write_lossless
    from deepforcing.video import VideoWriter

    if codec == "lossless":
        return str(write_lossless(path, frames, fps))
    w = VideoWriter(path, fps=fps)
    w.write(frames)
    return str(w.close())


def clear_model_caches() -> None:
    """Forget every model our dimensions keep loaded (so the next Scorer loads from disk, as vbench does)."""
    from deepforcing.metrics.dims import clip_dims, dynamic, subject

    for fn in (clip_dims.load_clip, dynamic.load_raft, subject.load_dino, subject.load_dinov2):
        fn.cache_clear()
    for mod_name in ("deepforcing.metrics.dims.imaging", "deepforcing.metrics.dims.motion",
                     "deepforcing.metrics.dims.overall"):
        mod = importlib.import_module(mod_name)
        for name in dir(mod):
            obj = getattr(mod, name)
            if callable(getattr(obj, "cache_clear", None)):
                obj.cache_clear()


def preimport(dims) -> None:
    """Import both sides' modules before anything is timed: import time is paid once per process."""
    from deepforcing.metrics import METRICS
    from deepforcing.metrics.specs import SPECS
    from deepforcing.metrics.vbench_compat import quiet_viclip_import

    for d in dims:
        METRICS.get(d)
        if d == "overall_consistency":
            quiet_viclip_import()
        importlib.import_module(f"vbench.{SPECS[d].vbench_name}")
    import clip  # noqa: F401
    import pyiqa.archs.musiq_arch  # noqa: F401


class Workload:
    """The clip files vbench scores for one workload, and how to map its scores onto ours."""

    def __init__(self, name: str, args, videos: list[str], frames: int, tmp: Path):
        from deepforcing.metrics import protocol

        self.name, self.args, self.videos, self.frames, self.tmp = name, args, videos, frames, tmp
        self.units: list[tuple[int, str, protocol.Span]] = []  # (video, kind, span)
        for vi in range(len(videos)):
            full = protocol.Span(0, frames)
            if name == "short":
                self.units.append((vi, "video", full))
                continue
            for seg in [full] + protocol.segments(frames, args.fps, args.segment_seconds):
                self.units.append((vi, "video" if seg == full else f"seg{seg.start}", seg))
            if name == "full":
                for k, e in enumerate(protocol.edge_windows(frames, 0.15)):
                    self.units.append((vi, f"edge{k}", e))
                for k, c in enumerate(protocol.equal_chunks(frames, 10)):
                    self.units.append((vi, f"vde{k}", c))

    def clip_files(self, dim: str) -> tuple[list[tuple[int, str]], list[str]]:
        from deepforcing.metrics import protocol
        from deepforcing.metrics.video import decode, write_lossless

        secs = None if self.name == "short" else 2.0
        jobs, paths, decoded = [], [], {}
        for vi, kind, span in self.units:
            for k, c in enumerate(protocol.clips_for(span, self.args.fps, secs)):
                jobs.append((vi, kind))
                if c.start == 0 and c.end == self.frames:  # the whole video: vbench reads the same file as we do
                    paths.append(self.videos[vi])
                    continue
                p = self.tmp / "clips" / f"{self.name}_{vi}_{kind}_{k}.mp4"
                if not p.exists():
                    if vi not in decoded:
                        decoded[vi] = decode(self.videos[vi]).frames
                    write_lossless(p, decoded[vi][c.start:c.end], self.args.fps)
                paths.append(str(p))
        return jobs, paths

    def config(self, dims, files, device):
        from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig

        return EvalConfig(dimensions=tuple(dims), device=device, progress=False,
                          gpu_autocast=self.args.gpu_autocast, gpu_channels_last=self.args.gpu_channels_last,
                          weights={k: str(v) for d in dims for k, v in files[d].items()},
                          clips=ClipProtocol(enabled=self.name != "short"),
                          drift=DriftConfig(enabled=self.name != "short", segment_seconds=self.args.segment_seconds,
                                            vde=self.name == "full", edge_windows=self.name == "full"))

    def max_diff(self, dim: str, results, ref: dict) -> float:
        from deepforcing.metrics import drift

        diff = 0.0
        for vi, r in enumerate(results):
            dr = r.dimensions[dim]
            assert dr.error is None, dr.error
            diff = max(diff, abs(dr.score - ref[(vi, "video")]))
            for seg in dr.segments:
                key = (vi, f"seg{seg['start_frame']}")
                if key in ref:
                    diff = max(diff, abs(seg["score"] - ref[key]))
            if self.name == "full":
                for k, name in enumerate(("edge_start", "edge_end")):
                    diff = max(diff, abs(dr.drift[name] - ref[(vi, f"edge{k}")]))
                ref_vde = drift.safe_vde([ref[(vi, f"vde{k}")] for k in range(10)], "linear")
                if ref_vde is not None or dr.drift.get("vde") is not None:
                    diff = max(diff, abs(dr.drift["vde"] - ref_vde))
        return diff


def run_vbench(dim, wl: Workload, files, args, prompt, dino_repo) -> tuple[float, dict]:
    from deepforcing.metrics.reference import vbench_scores

    jobs, paths = wl.clip_files(dim)
    with ForwardClock() as fc:
        t0 = time.perf_counter()
        ref = vbench_scores(dim, paths, files[dim], args.device, prompts=[prompt] * len(paths), dino_repo=dino_repo)
        t = time.perf_counter() - t0
    if dim == "imaging_quality":
        ref = [r / 100 for r in ref]
    agg: dict[tuple[int, str], list[float]] = {}
    for j, r in zip(jobs, ref, strict=True):
        agg.setdefault(j, []).append(r)
    return t, {k: sum(v) / len(v) for k, v in agg.items()}, fc.total


def run_ours(dims, wl: Workload, files, args, prompt, profile: bool = False):
    from deepforcing.metrics.scorer import Scorer

    if not args.warm:
        clear_model_caches()
    pr = cProfile.Profile() if profile else None
    with ForwardClock() as fc:
        t0 = time.perf_counter()
        if pr:
            pr.enable()
        scorer = Scorer(wl.config(dims, files, args.device))  # model loading counts
        results = [scorer.score_file(v, prompt) for v in wl.videos]
        if pr:
            pr.disable()
        t = time.perf_counter() - t0
    return t, results, pr, fc.total


def profile_text(pr: cProfile.Profile, n: int = 8) -> str:
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    st.sort_stats("tottime").print_stats(n)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip() and not ln.lstrip().startswith(("Ordered", "List"))]
    return "\n".join("    " + ln.replace(str(ROOT) + "/", "").replace(sys.prefix, "<py>") for ln in lines[1:])


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # vbench's progress bars
    import cv2
    import torch
    from metrics_helpers import RandomWeights

    from deepforcing.metrics.specs import SPECS
    from deepforcing.metrics.weight_files import resolve

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    if args.cache_dir:
        files_for = lambda d: resolve(d, args.cache_dir)  # noqa: E731
    else:
        rw = RandomWeights(tmp / "cache", full_size=args.full_size)
        files_for = rw.files
    dino_repo = os.environ.get("DEEPFORCING_DINO_REPO")
    dims = [d for d in args.dims if SPECS[d].vbench_name and (d != "subject_consistency" or dino_repo)]
    if len(dims) < len(args.dims):
        print(f"left out (no vbench reference here): {sorted(set(args.dims) - set(dims))}"
              + ("; subject_consistency needs DEEPFORCING_DINO_REPO=<facebookresearch/dino clone>"
                 if "subject_consistency" in args.dims and not dino_repo else ""))
    files = {d: files_for(d) for d in dims}  # write weights before timing
    preimport(dims)
    prompt = "a red square moves over a textured wall"
    busy = start_busy(args.busy)
    try:
        return _run(args, dims, files, dino_repo, tmp, prompt, SPECS)
    finally:
        for p in busy:
            p.terminate()


def _run(args, dims, files, dino_repo, tmp, prompt, SPECS) -> int:
    from metrics_helpers import synthetic_frames

    load = os.getloadavg()
    print(f"busy={args.busy} " * bool(args.busy) + f"device={args.device} threads={args.threads} repeat={args.repeat} "
          f"{'warm' if args.warm else 'cold (model loading in every repetition, both sides)'}; "
          f"load average at start {load[0]:.1f} on {os.cpu_count()} CPUs")
    for wname in args.workloads:
        frames = args.frames or DEFAULT_FRAMES[wname]
        codec = args.codec if wname == "short" else "lossless"  # long/full: clip files must carry the same pixels
        videos = []
        for i in range(args.videos):
            h, w = args.sizes[i % len(args.sizes)]
            videos.append(write_video(tmp / f"{wname}_v{i}.mp4", synthetic_frames(frames, h, w, i, speed=3 + 2 * i),
                                      args.fps, codec))
        wl = Workload(wname, args, videos, frames, tmp)
        sizes = " ".join(f"{h}x{w}" for h, w in args.sizes[: args.videos])
        print(f"\n== workload {wname}: {args.videos} videos x {frames} frames @ {args.fps} fps, {sizes}, {codec}; "
              f"dims={dims}")
        t_ref = {d: [] for d in dims}
        t_ours = {d: [] for d in dims}
        f_ref = {d: [] for d in dims}  # time inside network forwards
        f_ours = {d: [] for d in dims}
        t_all: list[float] = []
        diffs = {d: 0.0 for d in dims}
        profiles = {}
        for rep in range(args.repeat):
            for d in dims:
                prof = args.profile and rep == args.repeat - 1
                sides = ["vbench", "ours"] if (rep + dims.index(d)) % 2 == 0 else ["ours", "vbench"]
                res = ref = None
                for side in sides:
                    if side == "vbench":
                        t, ref, f = run_vbench(d, wl, files, args, prompt, dino_repo)
                        t_ref[d].append(t)
                        f_ref[d].append(f)
                    else:
                        t, res, pr, f = run_ours([d], wl, files, args, prompt, prof)
                        t_ours[d].append(t)
                        f_ours[d].append(f)
                        if pr:
                            profiles[d] = pr
                diffs[d] = max(diffs[d], wl.max_diff(d, res, ref))
            t, _, _, _ = run_ours(dims, wl, files, args, prompt)
            t_all.append(t)
        print(f"{'dimension':<24} {'vbench min':>10} {'med':>7} {'ours min':>9} {'med':>7} {'ratio min':>9} "
              f"{'med':>6} {'max|diff|':>10}")
        for d in dims:
            rm, rd = min(t_ref[d]), statistics.median(t_ref[d])
            om, od = min(t_ours[d]), statistics.median(t_ours[d])
            print(f"{d:<24} {rm:10.2f} {rd:7.2f} {om:9.2f} {od:7.2f} {rm / max(om, 1e-9):9.2f} "
                  f"{rd / max(od, 1e-9):6.2f} {diffs[d]:10.2e}")
        sum_ref_min = sum(min(v) for v in t_ref.values())
        sum_ref_med = sum(statistics.median(v) for v in t_ref.values())
        sum_ours_min = sum(min(v) for v in t_ours.values())
        am, ad = min(t_all), statistics.median(t_all)
        print(f"{'sum of dimensions':<24} {sum_ref_min:10.2f} {sum_ref_med:7.2f} {sum_ours_min:9.2f} "
              f"{sum(statistics.median(v) for v in t_ours.values()):7.2f} {sum_ref_min / sum_ours_min:9.2f}")
        print(f"{'TOTAL (one Scorer)':<24} {sum_ref_min:10.2f} {sum_ref_med:7.2f} {am:9.2f} {ad:7.2f} "
              f"{sum_ref_min / am:9.2f} {sum_ref_med / ad:6.2f} {max(diffs.values()):10.2e}")
        med = statistics.median
        print("\nwhere the time goes (medians, s): forwards = inside network forwards, other = the rest;\n"
              "ceiling = vbench's total / our forward time (our ratio if all but our forwards took no time)")
        print(f"{'dimension':<24} {'vbench fwd':>10} {'other':>7} {'ours fwd':>9} {'other':>7} {'fwd ratio':>9} "
              f"{'ceiling':>8}")
        for d in dims:
            vf, vt, of, ot = med(f_ref[d]), med(t_ref[d]), med(f_ours[d]), med(t_ours[d])
            fr, ceil = (f"{vf / of:9.2f}", f"{vt / of:8.2f}") if of > 1e-3 else (f"{'-':>9}", f"{'-':>8}")
            print(f"{d:<24} {vf:10.2f} {vt - vf:7.2f} {of:9.2f} {ot - of:7.2f} {fr} {ceil}")
        for d, pr in profiles.items():
            print(f"\nprofile of ours, {d} ({wname}, last repetition; top functions by own time):")
            print(profile_text(pr))
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
