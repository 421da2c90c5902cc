"""Get the published prompt sets (checked by sha256) into the prompt folder.

    python -m eval.prompts list
    python -m eval.prompts fetch moviegen_extended                 # from its public source
    python -m eval.prompts fetch moviegen_extended --from my/copy.txt

The folder is ``$DEEPFORCING_PROMPTS`` or ``~/.cache/deepforcing/prompts`` (``--dest`` to choose).
"""

from __future__ import annotations

import argparse
import sys

from deepforcing.errors import ConfigError
from deepforcing.prompts import SETS, fetch, set_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the known prompt sets and where each is expected")
    f = sub.add_parser("fetch", help="download (or copy) a prompt set and check its sha256")
    f.add_argument("name", choices=sorted(SETS))
    f.add_argument("--from", dest="source", help="a local copy instead of the public source")
    f.add_argument("--dest", help="folder to store it in (default: $DEEPFORCING_PROMPTS or ~/.cache/...)")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, s in sorted(SETS.items()):
            where = set_path(name)
            print(f"{name}: {s.note}\n  {where} ({'present' if where.exists() else 'missing'})\n  source {s.url}")
        return 0
    try:
        print(fetch(args.name, args.source, args.dest))
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
