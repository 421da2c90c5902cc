"""Engine speed: chunk latency, generation FPS and peak memory under a cache policy.

    python benchmarks/engine.py                       # tiny config on CPU (+ full config if CUDA)
    python benchmarks/engine.py --config full --frames 42 --policy rolling_window

FPS counts decoded pixel frames (the first chunk yields 4F-3, later chunks 4F) per second of
denoising + commit passes; VAE decoding is not included. Weights are random: speed does not depend
on their values.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from deepforcing.engine import Engine, RolloutConfig
from deepforcing.model import CausalWan, preset, random_init_
from deepforcing.policies import build_policy


def random_backbone(name: str, device: torch.device, dtype: torch.dtype) -> CausalWan:
    cfg = preset(name)
    with torch.device("meta"):
        model = CausalWan(cfg)
    return random_init_(model.to_empty(device=device), std=0.02).to(dtype).eval()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # host RSS, KiB -> MiB


def run(name: str, device: torch.device, dtype: torch.dtype, frames: int, policy: str, window: int) -> dict:
    model = random_backbone(name, device, dtype)
    cfg = model.cfg
    engine = Engine(model)
    text = model.text_state(torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=dtype))
    pol = build_policy(policy, window=window)
    rc = RolloutConfig(num_frames=frames, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    stamps: list[float] = []

    def on_chunk(_event):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    start = time.perf_counter()
    engine.generate(text, pol, rc, callback=on_chunk)
    lat = [b - a for a, b in zip([start] + stamps[:-1], stamps, strict=True)]
    steady = lat[1:] or lat
    tpf = cfg.vae_stride[0]
    pixel_frames = (rc.chunk_frames * tpf - (tpf - 1)) + (len(lat) - 1) * rc.chunk_frames * tpf
    return {
        "config": name,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "backend": engine.backend,
        "policy": f"{policy}({window})",
        "tokens/frame": cfg.tokens_per_frame(),
        "chunks": len(lat),
        "chunk ms (mean)": 1e3 * sum(steady) / len(steady),
        "chunk ms (max)": 1e3 * max(steady),
        "FPS": pixel_frames / (stamps[-1] - start),
        "peak MiB": peak_memory_mb(device),
        "cache MiB": engine._cache.nbytes() / 2**20,
    }


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    cells = [[f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["tiny", "full", "both"], default="both")
    ap.add_argument("--frames", type=int, default=42, help="latent frames (multiple of 3)")
    ap.add_argument("--policy", default="rolling_window")
    ap.add_argument("--window", type=int, default=21)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    if args.config in ("tiny", "both"):
        rows.append(run("tiny", torch.device("cpu"), torch.float32, args.frames, args.policy, args.window))
    if args.config in ("full", "both"):
        if torch.cuda.is_available():
            rows.append(run("wan21_t2v_1_3b", torch.device("cuda"), torch.bfloat16, args.frames, args.policy,
                            args.window))
        else:
            print("(full config skipped: no CUDA device here)")
    print_table(rows)


if __name__ == "__main__":
    main()
