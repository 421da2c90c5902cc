"""Result store: one folder per sweep point, keyed by what decides its generated videos.

    <root>/<sweep>/<key>/point.json                   resolved config, scoring settings, versions
    <root>/<sweep>/<key>/videos/<name>.latents.safetensors  clean latents + generation record (written first)
    <root>/<sweep>/<key>/videos/<name>.mp4            the encoded video
    <root>/<sweep>/<key>/videos/<name>.json           its record: metrics, per-segment series, diagnostics
    <root>/<sweep>/<key>/summary.json                 per-point means; no pending metric: the point is done
    <root>/<sweep>/<key>/error.json                   the point failed (message, traceback)
    <root>/<sweep>/.<key>.lock                        held by the process computing the point
    <root>/<sweep>/<key>.corrupt-<time>/              damaged files moved aside (same relative paths)

The key hashes the resolved generation settings (policy settings as they run, not how the overrides
were spelled) and the code version. Scoring settings and metric versions are not in the key: a new
metric, a metric version bump or weights installed after the run rescore the stored latents, without
generating again (:mod:`deepforcing.pipeline`).

Every JSON file carries ``"_store": {"kind", "schema", "sha256"}``, the digest of its content; every
video record carries the size and digest of its mp4 and latents. A reader validates all of it
(:class:`DamagedFile` names the file and what is wrong). Files are written to a temporary name and
renamed, so a killed run leaves no partial file under a final name; a process sweeps partial files
only while it holds the point's lock, so concurrent sweeps never delete each other's work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepforcing
from deepforcing.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

PARTIAL_MARKERS = (".partial", ".tmp")
SCHEMA = 1
CORRUPT = ".corrupt-"
LATENTS_SUFFIX = ".latents.safetensors"
#: Keys each kind of JSON file must hold.
REQUIRED = {
    "point": ("key", "method", "knobs", "config"),
    "video": ("prompt", "video", "frames", "metrics", "diagnostics"),
    "summary": ("key", "method", "videos"),
    "error": ("error",),
}


class DamagedFile(Exception):
    """A store file that cannot be trusted: unreadable, not the expected JSON, or its checksum is wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def point_key(generation: dict) -> str:
    blob = json.dumps({"config": generation, "code": deepforcing.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    """sha256 of the JSON content as it reads back (tuples as lists, objects as their str)."""
    return hashlib.sha256(_canonical(json.loads(_canonical(obj))).encode()).hexdigest()


def file_digest(path: str | os.PathLike) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(Path(path), json.dumps(obj, indent=2, default=str).encode())


def write_record(path: Path, kind: str, obj: dict) -> None:
    """Atomically write a store JSON file of ``kind`` with its checksum."""
    body = {k: v for k, v in obj.items() if k != "_store"}
    write_json_atomic(path, {**body, "_store": {"kind": kind, "schema": SCHEMA, "sha256": digest(body)}})


def read_record(path: str | os.PathLike, kind: str) -> dict:
    """Read and validate a store JSON file; raises :class:`DamagedFile` saying what is wrong."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DamagedFile(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DamagedFile(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DamagedFile(path, f"expected a JSON object, found {type(obj).__name__}")
    stamp = obj.pop("_store", None)
    if stamp is not None:  # files of older versions carry no checksum: their keys are still checked
        if not isinstance(stamp, dict) or stamp.get("kind") != kind:
            raise DamagedFile(path, f"not a {kind} file (store stamp {stamp!r})")
        if stamp.get("sha256") != digest(obj):
            raise DamagedFile(path, "checksum mismatch: the content changed after it was written")
    missing = [k for k in REQUIRED[kind] if k not in obj]
    if missing:
        raise DamagedFile(path, f"{kind} file without {', '.join(missing)}")
    return obj


def _tensor_digest(t) -> str:
    import torch

    return hashlib.sha256(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def save_latents(path: Path, latents, record: dict) -> None:
    """A video's clean latents ``[F, C, h, w]`` (in the engine's dtype) with its generation record, in a
    safetensors file; the record and the tensor's digest ride in the header metadata."""
    from safetensors.torch import save

    t = latents.contiguous()
    meta = {"record": json.dumps(record, default=str), "sha256": _tensor_digest(t), "schema": str(SCHEMA)}
    write_bytes_atomic(Path(path), save({"latents": t}, metadata=meta))


def load_latents(path: Path):
    """(latents, generation record); raises :class:`DamagedFile` when the file is unreadable or its
    tensor does not match its digest."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            t = f.get_tensor("latents")
        record = json.loads(meta["record"])
    except Exception as e:  # truncated header, bad offsets, missing tensor or metadata
        raise DamagedFile(path, f"unreadable latents file ({type(e).__name__}: {e})") from None
    if meta.get("sha256") != _tensor_digest(t):
        raise DamagedFile(path, "checksum mismatch: the latents changed after they were written")
    return t, record


@dataclass
class Damage:
    path: Path
    reason: str


class PointStore:
    def __init__(self, root: str | os.PathLike, sweep: str, key: str):
        self.sweep_dir = Path(root) / sweep
        self.key = key
        self.dir = self.sweep_dir / key
        self.videos = self.dir / "videos"

    # -- locking -----------------------------------------------------------------------------------
    @contextmanager
    def lock(self, poll_s: float = 5.0) -> Iterator[None]:
        """Hold the point's lock (an OS file lock: a killed holder releases it). A second process waits,
        saying once which point it waits for, then finds the point done and skips it."""
        from filelock import FileLock, Timeout

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.sweep_dir / f".{self.key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.warning("point %s is being computed by another process; waiting for it", self.key)
            lock.acquire(poll_interval=min(poll_s, 1.0))
        try:
            yield
        finally:
            lock.release()

    def sweep_partials(self) -> list[Path]:
        """Remove temporary files a killed run left behind (call only while holding the lock)."""
        gone = []
        if self.dir.exists():
            for p in self.dir.rglob(".*"):
                if p.is_file() and any(m in p.name for m in PARTIAL_MARKERS):
                    p.unlink(missing_ok=True)
                    gone.append(p)
        return gone

    # -- files ---------------------------------------------------------------------------------------
    def video_paths(self, name: str) -> tuple[Path, Path]:
        return self.videos / f"{name}.mp4", self.videos / f"{name}.json"

    def latents_path(self, name: str) -> Path:
        return self.videos / f"{name}{LATENTS_SUFFIX}"

    def read(self, name: str, kind: str) -> dict | None:
        """A point-level file (``point``, ``summary``, ``error``); None when absent. Raises DamagedFile."""
        p = self.dir / f"{name}.json"
        return read_record(p, kind) if p.exists() else None

    def read_video(self, name: str) -> dict | None:
        p = self.video_paths(name)[1]
        return read_record(p, "video") if p.exists() else None

    def start(self, point: dict) -> None:
        self.sweep_partials()
        (self.dir / "error.json").unlink(missing_ok=True)
        write_record(self.dir / "point.json", "point", point)

    def save_video_record(self, name: str, record: dict) -> None:
        write_record(self.video_paths(name)[1], "video", record)

    def video_records(self) -> list[dict]:
        return [read_record(p, "video") for p in sorted(self.videos.glob("*.json"))]

    def finish(self, summary: dict) -> None:
        write_record(self.dir / "summary.json", "summary", summary)
        (self.dir / "error.json").unlink(missing_ok=True)

    def fail(self, error: str, trace: str) -> None:
        write_record(self.dir / "error.json", "error", {"error": error, "traceback": trace})

    # -- damage ------------------------------------------------------------------------------------
    def check(self, names: list[str]) -> tuple[dict[str, dict | None], list[Damage]]:
        """Validate every file of the point: the readable video records by name, and what is damaged
        (unreadable JSON, wrong checksum, an mp4 or latents file whose size or digest is not the one its
        record states, files of a video without its record)."""
        damaged: list[Damage] = []
        for kind in ("point", "summary", "error"):
            try:
                self.read(kind, kind)
            except DamagedFile as e:
                damaged.append(Damage(e.path, e.reason))
        records: dict[str, dict | None] = {}
        for name in names:
            mp4, rec_path = self.video_paths(name)
            lat = self.latents_path(name)
            try:
                rec = self.read_video(name)
            except DamagedFile as e:
                damaged.append(Damage(e.path, e.reason))
                rec = None
            records[name] = rec
            files = (rec or {}).get("files") or {}
            for what, path in (("mp4", mp4), ("latents", lat)):
                want = files.get(what)
                if not path.exists() or want is None:
                    continue  # absent: regenerated; unknown (no record): checked when it is read
                got = file_digest(path)
                if got != want:
                    why = (f"{got['bytes']} bytes, its record says {want['bytes']}" if got["bytes"] != want["bytes"]
                           else "content differs from the digest in its record")
                    damaged.append(Damage(path, why))
        return records, damaged

    def quarantine(self, damaged: list[Damage]) -> Path | None:
        """Move damaged files aside into ``<key>.corrupt-<time>/`` and say so in one warning."""
        if not damaged:
            return None
        dest = self.sweep_dir / f"{self.key}{CORRUPT}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        for d in damaged:
            target = dest / d.path.relative_to(self.dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(d.path), str(target))
        log.warning("point %s: damaged file(s) moved to %s and recomputed: %s", self.key, dest,
                    "; ".join(f"{d.path.relative_to(self.dir)} ({d.reason})" for d in damaged))
        return dest


def list_points(sweep_dir: str | os.PathLike) -> list[dict]:
    """Every point of a sweep folder: its config, summary (if complete), error (if failed) and the
    files that could not be read (``damaged``: list of DamagedFile). Folders of moved-aside damaged
    files are not points."""
    out = []
    for d in sorted(Path(sweep_dir).iterdir()):
        if not d.is_dir() or CORRUPT in d.name or not (d / "point.json").exists():
            continue
        entry: dict[str, Any] = {"dir": d, "point": None, "summary": None, "error": None, "damaged": []}
        for kind in ("point", "summary", "error"):
            p = d / f"{kind}.json"
            if p.exists():
                try:
                    entry[kind] = read_record(p, kind)
                except DamagedFile as e:
                    entry["damaged"].append(e)
        out.append(entry)
    return out
