"""TOML configuration files: load, validate against a dataclass, apply CLI overrides.

A config file holds one table per command (``[train]``, ``[synth]``...). Keys must be
fields of the command's settings dataclass; unknown keys and wrong types are errors
(:class:`~fedrx.errors.ConfigError`), never silently ignored. Flags given on the command
line override the file.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from fedrx.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; every failure is a one-line :class:`ConfigError`."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: invalid TOML ({exc})") from None


def _coerce(name: str, typ: Any, value: Any) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"config key {name!r}: expected {typ.__name__}, got {value!r}")


def build(cls: type[T], table: dict[str, Any] | None, overrides: dict[str, Any]) -> T:
    """Instantiate dataclass ``cls`` from a config table, then apply non-None overrides."""
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, val in (table or {}).items():
        if key not in fields:
            raise ConfigError(
                f"unknown config key {key!r} (known: {', '.join(sorted(fields))})"
            )
        values[key] = _coerce(key, hints[key], val)
    for key, val in overrides.items():
        if val is not None:
            values[key] = val
    return cls(**values)


def section(config: Path | None, name: str) -> dict[str, Any] | None:
    """The ``[name]`` table of a config file (None when no file is given)."""
    if config is None:
        return None
    doc = load_toml(config)
    unknown = set(doc) - {name}
    tab = doc.get(name, {})
    if not isinstance(tab, dict):
        raise ConfigError(f"config {config}: [{name}] must be a table")
    if unknown and not tab:
        found = ", ".join(sorted(unknown))
        raise ConfigError(f"config {config}: no [{name}] table (found {found})")
    return tab
