"""W&B for sweeps logged offline: upload them and save their workspace later.

    python -m eval.wandb publish demo                     # wandb sync the sweep's runs, save its workspace
    python -m eval.wandb publish results/demo --dry-run   # what would be uploaded, the workspace's panels
    python -m eval.wandb workspace demo --json            # the workspace's view spec (built offline)

A sweep run with ``logger=wandb`` records its runs and, once compiled, its workspace spec in
``<out_dir>/wandb/wandb/deepforcing/<sweep>/`` beside the offline runs (deepforcing/dashboards.py).
``publish`` uploads the sweep's runs not yet uploaded (``wandb sync``), then saves the workspace
(needs ``wandb login``; the entity is ``logger.entity`` or your default one). A failed upload leaves
everything in place: publish again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepforcing.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.wandb", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help in (("publish", "upload the sweep's offline runs (wandb sync) and save its workspace"),
                       ("workspace", "print the sweep's workspace (sections and panels, or --json: its view spec)")):
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("sweep", help="the sweep's name (as in run.py sweep=...) or its folder <out_dir>/<sweep>")
        s.add_argument("--out-dir", default="results", help="run.py's out_dir (default: results)")
        s.add_argument("--wandb-dir", help="the logger's dir (default: <out_dir>/wandb, as in conf/logger/wandb.yaml)")
        if name == "publish":
            s.add_argument("--dry-run", action="store_true", help="upload nothing, save nothing: say what would be")
        else:
            s.add_argument("--json", action="store_true", help="print the view spec W&B stores")
    return p


def locate(sweep: str, out_dir: str, wandb_dir: str | None) -> tuple[Path, str]:
    """(wandb's run folder ``<logger dir>/wandb``, sweep name) for a sweep name or folder."""
    path = Path(sweep)
    if len(path.parts) > 1 or path.is_dir():
        out_dir, sweep = str(path.resolve().parent), path.resolve().name
    return Path(wandb_dir or Path(out_dir) / "wandb") / "wandb", sweep


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deepforcing import dashboards

    runs_dir, sweep = locate(args.sweep, args.out_dir, args.wandb_dir)
    try:
        if args.command == "publish":
            return dashboards.publish(runs_dir, sweep, dry_run=args.dry_run)
        entry = dashboards.read_spec(runs_dir, sweep)
        if entry is None:
            raise ConfigError(f"no workspace spec for sweep {sweep!r} under {runs_dir} (compile it with logger=wandb)")
        recipe = dashboards.Recipe(**entry["recipe"])
        print(json.dumps(dashboards.workspace_spec(recipe), indent=1) if args.json else dashboards.describe(recipe))
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
