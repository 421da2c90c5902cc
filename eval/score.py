"""Score videos with VBench dimensions, the VBench-Long clip protocol and drift statistics.

Examples::

    python -m eval.score videos/ --out results/
    python -m eval.score "runs/*/video.mp4" --prompts prompts.json --dimensions imaging_quality aesthetic_quality
    python -m eval.score clip.mp4 --prompt-from-filename --segment-seconds 5 --clip-seconds overall_consistency=2

Writes ``<out>/<video>.json`` per video (per-clip scores, per-segment series, drift statistics, errors),
``<out>/results.jsonl`` and ``<out>/table.txt``, and prints the table. ``<out>`` defaults to
``results/scores/<name of the folder holding the inputs>`` (under the current folder, as every results folder
of this project). Exit status: 0 when every video has a score for every requested dimension, 1 when a
video or a dimension errored or a dimension was skipped (missing weights), 2 on a usage error. Model files are read from
``$VBENCH_CACHE_DIR`` (default ``~/.cache/vbench``) with VBench's names; a dimension whose file is missing
is skipped with one message (see ``python -m eval.weights check``). Nothing is downloaded.

This scores the *encoded* files as they decode. A sweep (``run.py``) scores the decoded frames before
they are encoded, so the two differ by the codec's loss (e.g. temporal flickering 0.9103 in a sweep
vs 0.9126 from its mp4 at CRF 23). To add or redo metrics of a sweep with its own numbers, rerun it:
missing, pending or re-versioned metrics are scored from the stored latents (``rescore=true`` makes sure
nothing is generated).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from pathlib import Path

from deepforcing.errors import ConfigError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def expand_inputs(items: list[str]) -> list[str]:
    out: list[str] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(str(q) for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTS)
        elif any(ch in it for ch in "*?["):
            out += sorted(glob.glob(it, recursive=True))
        else:
            out.append(it)  # a missing file becomes a per-video error, not a crash
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


def load_prompts(path: str | None) -> dict[str, str]:
    """JSON ``{filename or stem: prompt}``, VBench's full-info list ``[{prompt_en, video_list}]``, or a
    text file with one ``filename<TAB>prompt`` per line."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--prompts {path}: no such file.")
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
        if isinstance(data, list):
            out = {}
            for e in data:
                vl = e.get("video_list", [])
                for v in vl if isinstance(vl, list) else [vl]:
                    out[str(v)] = e.get("prompt_en") or e.get("prompt", "")
            return out
        raise ConfigError(f"--prompts {path}: expected a JSON object or list.")
    out = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ConfigError(f"--prompts {path}:{n}: expected 'filename<TAB>prompt'.")
        k, v = line.split("\t", 1)
        out[k.strip()] = v.strip()
    return out


def prompt_for(video: str, prompts: dict[str, str], from_filename: bool) -> str | None:
    p = Path(video)
    for k in (video, p.name, p.stem, str(p.resolve()) if p.exists() else video):
        if k in prompts:
            return prompts[k]
    if from_filename:
        from vbench.utils import get_prompt_from_filename  # VBench's own rule: "<prompt>-<n>.mp4"

        return get_prompt_from_filename(video)
    return None


def default_out(videos: list[str]) -> Path:
    """``results/scores/<name>``: name = the folder holding every input (their deepest common folder)."""
    import os

    parents = [str(Path(v).resolve().parent) for v in videos] or [str(Path.cwd())]
    try:
        common = Path(os.path.commonpath(parents))
    except ValueError:  # different drives
        common = Path(parents[0])
    from deepforcing.metrics.report import safe_name

    return Path("results") / "scores" / (safe_name(common.name) if common.name else "root")


def exit_status(results, dims) -> int:
    """1 when any requested score is missing (video error, dimension error, skipped dimension), else 0."""
    for r in results:
        if r.error or r.skipped:
            return 1
        for d in dims:
            dr = r.dimensions.get(d)
            if dr is None or dr.error or dr.score is None:
                return 1
    return 0


def _kv(items: list[str] | None, flag: str, conv=str) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"{flag} {it!r}: expected KEY=VALUE.")
        k, v = it.split("=", 1)
        try:
            out[k] = conv(v)
        except ValueError as e:
            raise ConfigError(f"{flag} {it!r}: {e}") from e
    return out


def build_parser() -> argparse.ArgumentParser:
    from deepforcing.metrics.config import DEFAULT_DIMENSIONS
    from deepforcing.metrics.specs import SPECS

    ap = argparse.ArgumentParser(prog="python -m eval.score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="video files, folders or globs")
    ap.add_argument("--out", default=None,
                    help="output folder (default: results/scores/<name of the folder holding the inputs>)")
    ap.add_argument("--aggregation", choices=["mean", "vbench"], default="mean",
                    help="the table's mean row: plain mean over videos (default), or vbench's run score "
                    "(subject/background consistency weighted by frame pairs); the table says which")
    ap.add_argument("--dimensions", nargs="+", default=list(DEFAULT_DIMENSIONS), metavar="DIM",
                    help=f"default: {' '.join(DEFAULT_DIMENSIONS)}; available: {' '.join(sorted(SPECS))}")
    ap.add_argument("--prompts", help="JSON {filename: prompt}, VBench full-info JSON, or filename<TAB>prompt lines")
    ap.add_argument("--prompt-from-filename", action="store_true",
                    help="take the prompt from the file name as VBench does ('<prompt>-<n>.mp4')")
    ap.add_argument("--cache-dir", help="VBench cache dir (default: $VBENCH_CACHE_DIR or ~/.cache/vbench)")
    ap.add_argument("--weight", action="append", metavar="KEY=PATH",
                    help="explicit weight file, e.g. amt_s=/x/amt-s.pth (keys: python -m eval.weights check)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clip-seconds", action="append", metavar="DIM=S", help="override a dimension's clip length")
    ap.add_argument("--no-clips", action="store_true", help="score each video as one clip (plain VBench)")
    ap.add_argument("--scene-split", action="store_true",
                    help="VBench-Long's --use_semantic_splitting: cut at scene changes (PySceneDetect, threshold 35) "
                    "before clipping")
    ap.add_argument("--static-filter", action="store_true",
                    help="VBench-Long's --static_filter_flag: temporal flickering on static clips only (needs RAFT)")
    ap.add_argument("--static-max-clips", type=int, default=5,
                    help="with --static-filter: at most this many static clips per video (VBench-Long: 5)")
    ap.add_argument("--segment-seconds", type=float, default=5.0, help="drift segment length (default 5)")
    ap.add_argument("--no-drift", action="store_true", help="skip the drift series and statistics")
    ap.add_argument("--no-vde", action="store_true", help="skip BlockVid's VDE chunks")
    ap.add_argument("--no-edges", action="store_true", help="skip FramePack's 15%% start/end windows")
    ap.add_argument("--imaging-preprocess", default="longer")
    ap.add_argument("--no-details", action="store_true",
                    help="leave out the per-frame / per-pair values behind each clip's score (MUSIQ MOS and aesthetic "
                    "score per frame, RAFT top-5%% flow per pair, AMT error per interpolated frame)")
    ap.add_argument("--all-flow-pairs", action="store_true",
                    help="dynamic degree: run RAFT on every sampled pair (default: stop once VBench's count is "
                    "decided, the same score; the details then show null for the pairs skipped)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from deepforcing.metrics.config import ClipProtocol, DriftConfig, EvalConfig

        cfg = EvalConfig(
            dimensions=tuple(args.dimensions), device=args.device, cache_dir=args.cache_dir,
            weights=_kv(args.weight, "--weight"), batch_size=args.batch_size,
            clips=ClipProtocol(enabled=not args.no_clips, seconds=_kv(args.clip_seconds, "--clip-seconds", float),
                               static_filter=args.static_filter, static_max_clips=args.static_max_clips,
                               scene_split=args.scene_split),
            drift=DriftConfig(enabled=not args.no_drift, segment_seconds=args.segment_seconds,
                              vde=not args.no_vde, edge_windows=not args.no_edges),
            imaging_preprocess=args.imaging_preprocess, progress=not args.no_progress, details=not args.no_details,
            flow_early_exit=not args.all_flow_pairs,
        )
        prompts = load_prompts(args.prompts)
        videos = expand_inputs(args.inputs)
        if not videos:
            raise ConfigError(f"no videos found in {' '.join(args.inputs)} (looked for {', '.join(VIDEO_EXTS)}).")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from deepforcing.metrics.report import safe_name, table, write_json
    from deepforcing.metrics.scorer import Scorer

    scorer = Scorer(cfg)  # logs one warning per skipped dimension
    out = Path(args.out) if args.out else default_out(videos)
    out.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    with open(out / "results.jsonl", "w") as jl:
        for v in tqdm(videos, desc="videos", unit="video", disable=not cfg.progress):
            r = scorer.score_file(v, prompt_for(v, prompts, args.prompt_from_filename))
            name = safe_name(v)
            while name in used:
                name += "_"
            used.add(name)
            write_json(r, out, name)
            jl.write(json.dumps(r.to_dict(), allow_nan=False, default=str) + "\n")
            results.append(r)
    text = table(results, [d for d in cfg.dimensions], "abs_delta" if cfg.drift.enabled else None,
                 aggregation=args.aggregation)
    (out / "table.txt").write_text(text)
    print(text)
    status = exit_status(results, cfg.dimensions)
    print(f"written to {out}/" + ("" if status == 0 else "; some scores are missing (see Errors / Skipped), "
                                  "exit status 1"), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
