"""Train the ``toy`` backbone on the toy world and write its checkpoint folder.

    python3 experiments/train_toy.py --out deepforcing/assets/toy

Deterministic for a seed on one machine and thread count (``--threads``, default 2: both cores of the
2-core machine it was made on). Writes ``config.json`` and
``diffusion_pytorch_model.safetensors`` (the loader's Wan folder layout), ``train_config.json``,
``loss.csv``, ``loss.png`` and ``command.txt`` to ``--out``; with ``--snapshots DIR``, every
``--snapshot-every`` steps the EMA weights and a frame strip of held-out prompts go to ``DIR/step_<n>/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    from deepforcing.toyworld.train import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainConfig):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    ap.add_argument("--out", default=str(ROOT / "deepforcing" / "assets" / "toy"))
    ap.add_argument("--snapshots", default=None, help="folder for intermediate EMA weights and sample strips")
    ap.add_argument("--snapshot-every", type=int, default=500)
    args = ap.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.threads))

    import torch

    from deepforcing.toyworld.samples import loss_plot, sample_strip
    from deepforcing.toyworld.train import save, train

    out = Path(args.out)
    tic = time.perf_counter()

    def on_log(row: dict) -> None:
        print(f"step {row['step']:5d}  loss {row['loss']:.4f}  lr {row['lr']:.2e}  {row['seconds']:.0f}s", flush=True)

    def on_snapshot(step: int, model) -> None:
        if args.snapshots is None:
            return
        d = Path(args.snapshots) / f"step_{step:05d}"
        save(model, cfg, [], d)
        with torch.no_grad():
            sample_strip(model, d / "samples.png")
        torch.set_num_threads(cfg.threads)

    model, log = train(cfg, on_log=on_log, on_snapshot=on_snapshot, snapshot_every=args.snapshot_every)
    save(model, cfg, log, out)
    loss_plot(out / "loss.csv", out / "loss.png")
    command = "python3 experiments/train_toy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    (out / "command.txt").write_text(
        f"{command}\n# {cfg.steps} steps in {time.perf_counter() - tic:.0f} s on {cfg.threads} CPU thread(s); "
        f"final logged loss {log[-1]['loss']:.4f}\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
