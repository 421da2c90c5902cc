"""List which VBench model files are present: ``python -m eval.weights check [--cache-dir DIR]``.

Nothing is ever downloaded; for each missing file the URL it comes from is printed.
"""

from __future__ import annotations

import argparse
import sys

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
    base = args.cache_dir or W.default_cache_dir()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
