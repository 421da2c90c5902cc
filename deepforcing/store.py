"""Result store: one folder per sweep point, keyed by what decides its outputs.

    <root>/<sweep>/<key>/point.json          resolved semantic config + versions (written first)
    <root>/<sweep>/<key>/videos/<name>.mp4   each video (written atomically)
    <root>/<sweep>/<key>/videos/<name>.json  its metrics, per-segment series, policy diagnostics
    <root>/<sweep>/<key>/summary.json        written last: the point is complete
    <root>/<sweep>/<key>/error.json          the point failed (message, traceback)

The key hashes the resolved configuration (policy settings as they run, not how the overrides were
spelled), the code version and the metric versions, so a rerun skips finished points and finished
videos. Every file is written to a temporary name and renamed, so a killed run leaves no partial
file under a final name; leftovers are swept on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import deepforcing

PARTIAL_MARKERS = (".partial", ".tmp")


def point_key(semantic: dict, metric_versions: dict[str, str]) -> str:
    blob = json.dumps({"config": semantic, "code": deepforcing.__version__, "metrics": metric_versions},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class PointStore:
    def __init__(self, root: str | os.PathLike, sweep: str, key: str):
        self.dir = Path(root) / sweep / key
        self.videos = self.dir / "videos"

    def sweep_partials(self) -> list[Path]:
        """Remove temporary files a killed run left behind."""
        gone = []
        if self.dir.exists():
            for p in self.dir.rglob(".*"):
                if p.is_file() and any(m in p.name for m in PARTIAL_MARKERS):
                    p.unlink()
                    gone.append(p)
        return gone

    @property
    def done(self) -> bool:
        return (self.dir / "summary.json").exists()

    def start(self, point: dict) -> None:
        self.sweep_partials()
        (self.dir / "error.json").unlink(missing_ok=True)
        write_json_atomic(self.dir / "point.json", point)

    def video_paths(self, name: str) -> tuple[Path, Path]:
        return self.videos / f"{name}.mp4", self.videos / f"{name}.json"

    def video_done(self, name: str) -> bool:
        mp4, rec = self.video_paths(name)
        return mp4.exists() and rec.exists()

    def save_video_record(self, name: str, record: dict) -> None:
        write_json_atomic(self.video_paths(name)[1], record)

    def video_records(self) -> list[dict]:
        return [read_json(p) for p in sorted(self.videos.glob("*.json"))]

    def finish(self, summary: dict) -> None:
        write_json_atomic(self.dir / "summary.json", summary)

    def fail(self, error: str, trace: str) -> None:
        write_json_atomic(self.dir / "error.json", {"error": error, "traceback": trace})


def list_points(sweep_dir: str | os.PathLike) -> list[dict]:
    """Every point of a sweep folder: its config, summary (if complete) and error (if failed)."""
    out = []
    for d in sorted(Path(sweep_dir).iterdir()):
        if not (d / "point.json").exists():
            continue
        out.append({
            "dir": d,
            "point": read_json(d / "point.json"),
            "summary": read_json(d / "summary.json") if (d / "summary.json").exists() else None,
            "error": read_json(d / "error.json") if (d / "error.json").exists() else None,
        })
    return out
