"""Engine speed and memory: seconds per chunk once the window is full, peak KV bytes, peak RSS, FLOPs.

    python benchmarks/engine.py                                   # our policies vs our rolling window
    python benchmarks/engine.py --reference ~/src/Self-Forcing    # + Self-Forcing side by side
    python benchmarks/engine.py --config mid --reps 5 --threads 1

Each row runs in its own process (so peak RSS is its own), repetitions interleaved across rows. Time is
the process CPU time of each chunk after the window is full (robust on a shared machine; with one thread
it equals wall time on an idle one); per repetition the mean over those chunks, then min and median
over repetitions; ``probe %`` is the attention probe's share of the whole rollout's CPU time (worst
repetition). The chunks before the window is full are warm-up (and, with ``--compile``, where
torch.compile builds its graphs: a graph built later is an error, so compile time is never timed). The last
chunk is not timed: FLOPs are counted on it (matmuls through torch.utils.flop_counter, SDPA as
4*B*H*Lq*Lk*D). ``--reference PATH`` imports guandeh17/Self-Forcing's ``CausalInferencePipeline`` from a
checkout at PATH (never copied here; benchmarks/reference_self_forcing.py says what is adapted) and runs it
on the same weights, config and noise: its rows are the reference for rolling window and sink, and ``max rel
diff`` checks that the outputs agree (above ``--tol`` the row says FAIL and the exit status is 1). Without
it, every policy is compared with our rolling window. Weights are random: speed does not depend on their values.

Configs: ``tiny`` (dim 32, 2 heads, 2 layers at the real 60x104 latent), ``mid`` (dim 256, 4 heads,
4 layers, latent 20x36), ``full`` (Wan2.1-1.3B; needs CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_CONFIGS = {
    "tiny": dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, latent_hw=(60, 104)),
    "mid": dict(dim=256, ffn_dim=512, num_heads=4, num_layers=4, latent_hw=(20, 36)),
}

# row name -> (our policy, its settings as a function of the window, the reference's sink size or None)
ROWS = {
    "rolling_window": ("rolling_window", lambda w: dict(window=w), 0),
    "sink": ("attention_sink", lambda w: dict(sink=3, window=w, positions="absolute"), 3),
    "deep_sink": ("deep_sink", lambda w: dict(window=w, sink=w * 10 // 21, align="paper"), None),
    # Deep Forcing's paper setting at W=21 (S=10, R=4, N=16: Top-C 2 frames), scaled with the window
    "deep_forcing": ("participative_compression", lambda w: dict(
        window=w, sink=w * 10 // 21, recent=max(3, w * 4 // 21), budget=w * 10 // 21 + max(3, w * 4 // 21)
        + max(1, w * 2 // 21)), None),
    "longlive": ("longlive", lambda w: dict(sink=3, window=w), None),
}


def model_config(name: str):
    from deepforcing.model import preset

    if name == "full":
        return preset("wan21_t2v_1_3b")
    return dataclasses.replace(preset("tiny"), name=f"bench_{name}", **BENCH_CONFIGS[name])


def sdpa_flops(flops: list[int]):
    """Wrap F.scaled_dot_product_attention to add its FLOPs (4*B*H*Lq*Lk*D) to ``flops[0]``."""
    import torch.nn.functional as F

    inner = F.scaled_dot_product_attention

    def counted(q, k, v, *a, **kw):
        b, h, lq, d = q.shape
        flops[0] += 4 * b * h * lq * k.shape[-2] * d
        return inner(q, k, v, *a, **kw)

    return inner, counted


def worker(spec: dict) -> dict:
    """One measured rollout (runs in its own process)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from deepforcing.engine import AttentionProbe, Engine, RolloutConfig
    from deepforcing.model import CausalWan, random_init_
    from deepforcing.policies import build_policy

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    cfg = model_config(spec["config"])
    with torch.device("meta"):
        model = CausalWan(cfg)
    model = random_init_(model.to_empty(device="cpu"), std=0.02).to(device, dtype).eval()
    text = torch.randn(1, cfg.text_len, cfg.text_dim, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    frames, seed, cf = spec["frames"], spec["seed"], spec["chunk_frames"]
    chunks = frames // cf
    stamps: list[float] = []
    probe_s = [0.0]
    flops = [0]
    counter = FlopCounterMode(display=False)
    sdpa_plain, sdpa_counted = sdpa_flops(flops)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    first_full = -(-spec["window"] // cf)  # the first chunk that evicts: timed are first_full .. chunks - 2
    compiled_graphs: list[int] = []  # torch.compile graphs so far, when the timed chunks start and end

    def graphs() -> int:
        from torch._dynamo.utils import counters

        return counters["stats"]["unique_graphs"]

    def chunk_done():
        sync()
        stamps.append(time.process_time() if device.type == "cpu" else time.perf_counter())
        done = len(stamps) - 1  # chunks finished (stamps[0] is the start)
        if done in (first_full, chunks - 1):
            compiled_graphs.append(graphs())
        if done == chunks - 1:  # count the last chunk, which is not timed
            F.scaled_dot_product_attention = sdpa_counted
            counter.__enter__()
        elif done == chunks:
            counter.__exit__(None, None, None)
            F.scaled_dot_product_attention = sdpa_plain

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if spec["impl"] == "ref":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import reference_self_forcing as ref

        lib = ref.load(spec["reference"])
        pipe = lib.build(cfg, model.state_dict(), spec["window"], spec["ref_sink"], dtype, device)
        calls = [0]
        per_chunk = len(pipe.denoising_step_list) + 1

        def on_call():
            calls[0] += 1
            if calls[0] % per_chunk == 0:
                chunk_done()

        torch.manual_seed(seed)
        noise = torch.randn(1, frames, cfg.in_dim, *cfg.latent_hw).to(device, dtype)
        sync()
        stamps.append(time.process_time() if device.type == "cpu" else time.perf_counter())
        latents = ref.run(pipe, noise, text, on_call=on_call)
        kv = ref.kv_bytes(pipe)
    else:
        every = 0 if spec["probe"] == "off" else AttentionProbe().every
        engine = Engine(model, probe=AttentionProbe(every=every), compile=spec.get("compile"))
        measure = engine.probe.measure

        def timed_measure(*a, **kw):  # the probe's own cost
            tic = time.process_time()
            measure(*a, **kw)
            probe_s[0] += time.process_time() - tic

        engine.probe.measure = timed_measure
        policy = build_policy(spec["policy"], **spec["settings"])
        rc = RolloutConfig(num_frames=frames, rng="reference", seed=seed, chunk_frames=cf)
        sync()
        stamps.append(time.process_time() if device.type == "cpu" else time.perf_counter())
        latents = engine.generate(model.text_state(text), policy, rc, callback=lambda _e: chunk_done())
        kv = engine._cache.nbytes()
    lat = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)]
    assert len(lat) == chunks, (len(lat), chunks)
    timed = lat[first_full:-1]
    if compiled_graphs[1] != compiled_graphs[0]:  # the warm-up chunks must have compiled everything
        raise RuntimeError(f"torch.compile built {compiled_graphs[1] - compiled_graphs[0]} graph(s) during the "
                           "timed chunks: compile time would be timed")
    if spec.get("save"):
        torch.save(latents.float().cpu(), spec["save"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss
    return {"chunk_s": sum(timed) / len(timed), "timed_chunks": len(timed), "kv_bytes": kv,
            "warmup_s": sum(lat[:first_full]), "graphs": compiled_graphs[0],
            "probe_share": probe_s[0] / (stamps[-1] - stamps[0]),
            "peak_mib": peak, "flops": flops[0] + counter.get_total_flops()}


def spawn(spec: dict) -> dict:
    root = str(Path(__file__).resolve().parents[1])  # this checkout's deepforcing, not another install
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
           "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise RuntimeError(f"worker {spec['impl']}/{spec['row']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    cells = [[f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", choices=["tiny", "mid", "full"], default="tiny")
    ap.add_argument("--reference", help="path of a guandeh17/Self-Forcing checkout to run side by side")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--window", type=int, default=21)
    ap.add_argument("--chunk-frames", type=int, default=3)
    ap.add_argument("--frames", type=int, default=None, help="default: the window plus 3 timed chunks and 1 counted")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--probe", choices=["off", "sampled", "both"], default="both",
                    help="our attention probe: off, sampled (the default AttentionProbe), or a row for each")
    ap.add_argument("--compile", default="none",
                    help="Engine(compile=...) for our rows: none (eager), inductor, cudagraphs, ...; comma-separated "
                    "for a row of each, e.g. none,inductor. Compiled in the warm-up chunks (before the window is "
                    "full, never timed); a graph compiled during the timed chunks is an error")
    ap.add_argument("--tol", type=float, default=1e-5,
                    help="largest max rel diff of our output against the reference's (exit status 1 above it)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import torch

    if args.config == "full" and not torch.cuda.is_available():
        sys.exit("the full config needs a CUDA device")
    device, dtype = ("cuda", "bfloat16") if args.config == "full" else ("cpu", "float32")
    cf = args.chunk_frames
    frames = args.frames or (-(-args.window // cf) + 4) * cf
    base = dict(config=args.config, device=device, dtype=dtype, frames=frames, seed=0, chunk_frames=cf,
                window=args.window, threads=args.threads, reference=args.reference)
    compiles = [None if c == "none" else c for c in args.compile.split(",")]
    probes = ["off", "sampled"] if args.probe == "both" else [args.probe]
    specs = []
    for row in args.rows.split(","):
        policy, settings, ref_sink = ROWS[row]
        if args.reference and ref_sink is not None:
            specs.append(dict(base, impl="ref", row=row, ref_sink=ref_sink, policy=None, settings=None, probe="-"))
        for comp in compiles:
            for probe in probes:
                specs.append(dict(base, impl="ours", row=row, policy=policy, settings=settings(args.window),
                                  probe=probe, compile=comp))
    results: list[list[dict]] = [[] for _ in specs]
    tmp = Path(tempfile.mkdtemp(prefix="engine_bench_"))
    for rep in range(args.reps):  # interleaved: every row once per repetition
        for i, spec in enumerate(specs):
            save = str(tmp / f"{i}.pt") if rep == 0 else None
            results[i].append(spawn(dict(spec, save=save)))
            print(f"rep {rep} {spec['impl']:4s} {spec['row']:15s} probe={spec['probe']:7s} "
                  f"compile={spec.get('compile') or '-':8s} "
                  f"{results[i][-1]['chunk_s']:.3f} s/chunk", file=sys.stderr, flush=True)

    def baseline(spec: dict) -> int:
        """Index of the row this one is compared with: the reference of its row, else our rolling window."""
        for j, s in enumerate(specs):
            if s["impl"] == "ref" and s["row"] == spec["row"] and spec["impl"] == "ours":
                return j
        for j, s in enumerate(specs):
            if (s["impl"] == "ours" and s["row"] == "rolling_window" and s["probe"] == spec["probe"]
                    and s.get("compile") == spec.get("compile")):
                return j
        return specs.index(spec)

    rows, mismatch = [], False
    for i, spec in enumerate(specs):
        med = statistics.median(r["chunk_s"] for r in results[i])
        j = baseline(spec)
        base_med = statistics.median(r["chunk_s"] for r in results[j])
        same = specs[j]["row"] == spec["row"] and j != i
        diff = "-"
        if same:
            a, b = torch.load(tmp / f"{i}.pt"), torch.load(tmp / f"{j}.pt")
            rel = float((a - b).abs().max() / b.abs().max())
            diff = f"{rel:.1e}" + ("" if rel <= args.tol else " FAIL")
            mismatch |= not rel <= args.tol
        rows.append({
            "row": spec["row"], "impl": "Self-Forcing" if spec["impl"] == "ref" else "ours",
            "probe": spec["probe"], "compile": "-" if spec["impl"] == "ref" else spec["compile"] or "eager",
            "s/chunk min": min(r["chunk_s"] for r in results[i]), "s/chunk median": med,
            "vs": "-" if j == i else ("reference" if specs[j]["impl"] == "ref" else "our rolling_window"),
            "ratio": med / base_med, "max rel diff": diff,
            "peak KV MiB": results[i][0]["kv_bytes"] / 2**20, "peak RSS MiB": max(r["peak_mib"] for r in results[i]),
            "GFLOP/chunk": results[i][0]["flops"] / 1e9,
            "probe %": "-" if spec["impl"] == "ref" else f"{100 * max(r['probe_share'] for r in results[i]):.2f}",
        })
    warm = -(-args.window // cf)
    print(f"config={args.config} window={args.window} frames={frames} chunk={cf} threads={args.threads} "
          f"reps={args.reps} device={device} dtype={dtype} torch={torch.__version__} "
          f"(timed: chunks {warm}..{frames // cf - 2}, after the window is full; chunks 0..{warm - 1} are warm-up"
          f"{' and compile' if any(compiles) else ''}; the last chunk counts FLOPs; "
          f"max rel diff tolerance {args.tol:g})")
    if any(compiles):
        print(f"compile warm-up: our rows built {max(r['graphs'] for res in results for r in res)} graph(s) in the "
              "warm-up chunks and none in the timed chunks; warm-up CPU s (median): " + ", ".join(
                  f"{s['row']}/{s['probe']}/{s['compile'] or 'eager'} "
                  f"{statistics.median(r['warmup_s'] for r in res):.1f}"
                  for s, res in zip(specs, results, strict=True) if s["impl"] == "ours"))
    print_table(rows)
    if mismatch:
        sys.exit(f"our output differs from the reference's by more than --tol {args.tol:g}")


if __name__ == "__main__":
    main()
