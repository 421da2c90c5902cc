"""KV-cache policies, one small file each, behind :class:`~deepforcing.policies.base.CachePolicy`.

A policy is a dataclass (its settings are its fields) registered where it is defined, with the
presets it offers, the sources behind each preset's numbers, the sweep knobs it accepts and the rollout
it needs declared beside the class (:func:`register`). Every module of this package is a policy file;
another installed package adds policies through the entry-point group ``deepforcing.policies`` (each
entry names a module, imported when the catalogue is first read), so a lab keeps its policy outside
this repository and sweeps it beside ours.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from deepforcing.errors import ConfigError

ENTRY_POINT_GROUP = "deepforcing.policies"


@dataclass(frozen=True)
class Preset:
    """Named settings of a policy, where its numbers come from, and the rollout settings it runs with."""

    settings: dict[str, Any]
    source: str
    rollout: dict[str, Any] = field(default_factory=dict)


_CLASSES: dict[str, type] = {}
_PRESETS: dict[str, tuple[type, Preset]] = {}
_LOADED = False


def register(cls: type) -> type:
    """Class decorator: add a policy and its presets to the catalogue."""
    other = _CLASSES.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"policy {cls.name!r} is already registered by {other.__module__}.{other.__qualname__}")
    _CLASSES[cls.name] = cls
    for name, preset in cls.presets.items():
        owner = _PRESETS.get(name)
        if owner is not None and owner[0].name != cls.name:
            raise ValueError(f"preset {name!r} of {cls.name} is already a preset of {owner[0].name}")
        _PRESETS[name] = (cls, preset)
    return cls


def _load() -> None:
    """Import every policy file of this package and of the entry-point group (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base", "presets"):
            importlib.import_module(f"{__name__}.{mod.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise ConfigError(f"policy plug-in {ep.name!r} ({ep.value}) of the {ENTRY_POINT_GROUP!r} entry points "
                              f"failed to import: {type(e).__name__}: {e}") from e


def policy_names() -> list[str]:
    _load()
    return sorted(_CLASSES)


def preset_names() -> list[str]:
    _load()
    return sorted(_PRESETS)


def policy_class(name: str) -> type:
    _load()
    if name not in _CLASSES:
        import difflib

        close = difflib.get_close_matches(name, _CLASSES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"unknown cache policy {name!r}.{hint} Known policies: {', '.join(policy_names())}.")
    return _CLASSES[name]


def preset(name: str) -> tuple[type, Preset]:
    """(policy class, preset) of a preset name; a bare policy name is its own preset with its defaults."""
    _load()
    if name in _PRESETS:
        return _PRESETS[name]
    if name in _CLASSES:
        return _CLASSES[name], Preset({}, f"{name} with its default settings")
    import difflib

    close = difflib.get_close_matches(name, _PRESETS, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ConfigError(f"unknown policy preset {name!r}.{hint} Known presets: {', '.join(preset_names())}")


def policies_using(knob: str) -> list[str]:
    """Policies that accept the sweep knob ``knob``."""
    _load()
    return sorted(n for n, c in _CLASSES.items() if knob in c.knobs)


def build_policy(name: str, **kwargs):
    """Instantiate the policy ``name`` with its settings."""
    cls = policy_class(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        from dataclasses import fields

        raise ConfigError(f"policy {name!r} does not take these settings ({e}); its settings: "
                          f"{', '.join(f.name for f in fields(cls))}") from None
