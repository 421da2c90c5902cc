"""Importing vbench pieces without side effects.

``vbench.third_party.ViCLIP.simple_tokenizer`` evaluates ``default_bpe()`` at import time, which runs
``wget`` when ``<VBENCH_CACHE_DIR>/ViCLIP/bpe_simple_vocab_16e6.txt.gz`` is absent. ``quiet_viclip_import``
points vbench at a folder that already holds the vocabulary (the copy inside the openai-clip package)
for the duration of the import, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .weight_files import _clip_pkg_bpe

BPE = "bpe_simple_vocab_16e6.txt.gz"


@contextlib.contextmanager
def cache_dir_with_bpe(bpe: str | Path | None = None):
    """A temporary VBench-style cache dir holding ``ViCLIP/<bpe>``; yields its path."""
    with tempfile.TemporaryDirectory(prefix="vbench_bpe_") as d:
        (Path(d) / "ViCLIP").mkdir()
        shutil.copy(str(bpe or _clip_pkg_bpe()), Path(d) / "ViCLIP" / BPE)
        yield d


def quiet_viclip_import():
    """Import ``vbench.third_party.ViCLIP`` (and ``vbench.overall_consistency``) without any download."""
    if "vbench.third_party.ViCLIP.simple_tokenizer" in sys.modules:
        from vbench.third_party.ViCLIP.viclip import ViCLIP

        return ViCLIP
    import vbench.utils as vu

    if (Path(vu.CACHE_DIR) / "ViCLIP" / BPE).is_file():
        from vbench.third_party.ViCLIP.viclip import ViCLIP

        return ViCLIP
    # the tokenizer module keeps this path as its default (ViCLIP's text tower builds a tokenizer from
    # it), so it must outlive the import: a fixed folder in the temp dir, holding a copy of the vocabulary
    d = Path(tempfile.gettempdir()) / "deepforcing_vbench_bpe"
    (d / "ViCLIP").mkdir(parents=True, exist_ok=True)
    if not (d / "ViCLIP" / BPE).is_file():
        tmp = d / "ViCLIP" / (BPE + f".{os.getpid()}")
        shutil.copy(_clip_pkg_bpe(), tmp)
        os.replace(tmp, d / "ViCLIP" / BPE)
    old = vu.CACHE_DIR
    vu.CACHE_DIR = str(d)
    try:
        import vbench.overall_consistency  # noqa: F401
        from vbench.third_party.ViCLIP.viclip import ViCLIP  # noqa: F401
    finally:
        vu.CACHE_DIR = old
    return ViCLIP
