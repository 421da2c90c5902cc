"""Published prompt sets: where they come from, their checksums, and where they are kept here.

The prompt files are not shipped (MovieGenBench prompts are CC BY-NC 4.0); ``python -m eval.prompts
fetch NAME`` downloads one from its public source, or copies a local file (``--from PATH``), checks its
sha256 and stores it in the prompt folder: ``$DEEPFORCING_PROMPTS`` or ``~/.cache/deepforcing/prompts``.
A set is resolved there whatever the current folder, and its checksum is checked when it is read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from deepforcing.errors import ConfigError


@dataclass(frozen=True)
class PromptSet:
    file: str
    url: str
    sha256: str
    note: str


SELF_FORCING_PROMPTS = "https://raw.githubusercontent.com/guandeh17/Self-Forcing/main/prompts/"
SETS = {
    "moviegen_extended": PromptSet(
        "MovieGenVideoBench_extended.txt", SELF_FORCING_PROMPTS + "MovieGenVideoBench_extended.txt",
        "50293c2717c8f2df5773154d4680c74e636ecb08eb4fe13cdce7357d0ab9d121",
        "MovieGen Video Bench prompts extended by an LLM, as Self-Forcing distributes them; the papers use "
        "the first 128 lines"),
    "moviegen": PromptSet(
        "MovieGenVideoBench.txt", SELF_FORCING_PROMPTS + "MovieGenVideoBench.txt",
        "ae02a4bbebcb55067dbeea369e43d52a4817d57fd0ac223071b9aa236ac027c4",
        "MovieGen Video Bench prompts (1003 lines), as Self-Forcing distributes them"),
}


def prompt_dir() -> Path:
    return Path(os.environ.get("DEEPFORCING_PROMPTS") or Path.home() / ".cache" / "deepforcing" / "prompts")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _set(name: str) -> PromptSet:
    if name not in SETS:
        raise ConfigError(f"unknown prompt set {name!r}; known: {', '.join(sorted(SETS))}")
    return SETS[name]


def set_path(name: str) -> Path:
    return prompt_dir() / _set(name).file


def read_set(name: str) -> list[str]:
    """The prompts of a published set, checked against its sha256."""
    s, path = _set(name), set_path(name)
    if not path.exists():
        raise ConfigError(f"prompt set {name!r} not found at {path}; get it with `python -m eval.prompts fetch {name}` "
                          "(or `--from <your copy>`), or point DEEPFORCING_PROMPTS at the folder holding "
                          f"{s.file}")
    data = path.read_bytes()
    if _sha256(data) != s.sha256:
        raise ConfigError(f"{path} is not the published {s.file} (sha256 {_sha256(data)[:12]}..., expected "
                          f"{s.sha256[:12]}...); fetch it again with `python -m eval.prompts fetch {name}`")
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def fetch(name: str, source: str | os.PathLike | None = None, dest: str | os.PathLike | None = None) -> Path:
    """Download (or copy from ``source``) a prompt set, check its sha256, store it atomically."""
    from deepforcing.atomic import write_bytes_atomic

    s = _set(name)
    if source is not None:
        data = Path(source).read_bytes()
        origin = str(source)
    else:
        import urllib.request

        with urllib.request.urlopen(s.url, timeout=60) as r:
            data = r.read()
        origin = s.url
    if _sha256(data) != s.sha256:
        raise ConfigError(f"{origin}: sha256 {_sha256(data)} is not the published {s.file}'s {s.sha256}; "
                          "nothing was written")
    return write_bytes_atomic((Path(dest) if dest else prompt_dir()) / s.file, data)
