"""List which VBench model files are present: ``python -m eval.weights check [--cache-dir DIR]``.

Nothing is ever downloaded; for each missing file the URL it comes from is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepforcing.metrics import weight_files as W
from deepforcing.metrics.specs import SPECS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.weights", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="list the weight files each dimension needs and whether they are present")
    c.add_argument("--cache-dir", default=None, help="VBench cache dir (default: $VBENCH_CACHE_DIR or ~/.cache/vbench)")
    c.add_argument("--dimensions", nargs="*", default=None, choices=sorted(SPECS))
    args = ap.parse_args(argv)
    rows = W.check(args.dimensions, args.cache_dir)
    base = Path(args.cache_dir).expanduser() if args.cache_dir else W.default_cache_dir()
    print(f"VBench cache dir: {base}")
    ready = {}
    for r in rows:
        ready[r["dimension"]] = ready.get(r["dimension"], True) and r["present"]
        mark = "ok     " if r["present"] else "MISSING"
        line = f"  {mark} {r['dimension']:<24} {r['file']}"
        if r["present"] and r["path"]:
            line += f"  -> {r['path']}"
        if not r["present"]:
            line += f"\n          get it from {r['url']}\n          and place it at {r['path']}"
        print(line)
    n_ok = sum(ready.values())
    print(f"{n_ok}/{len(ready)} dimensions have all their files: "
          + ", ".join(d for d, ok in ready.items() if ok))
    if "subject_consistency" in ready:
        backend, repo = W.dino_backend(args.cache_dir)
        if backend == "dino_repo":
            print(f"subject_consistency DINO backend: dino_repo (facebookresearch/dino clone at {repo}, built with "
                  "torch.hub as vbench does)")
        else:
            print("subject_consistency DINO backend: timm (ViT-B/16 with DINO's position-embedding interpolation; "
                  f"no facebookresearch/dino clone at {base / W.DINO_REPO_RELPATH}; place one there to build DINO "
                  "exactly as vbench does)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
