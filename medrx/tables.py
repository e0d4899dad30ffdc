"""Streaming access to EHR CSV tables with clear errors.

Both MIMIC-III and eICU ship tables as ``NAME.csv`` or ``NAME.csv.gz`` with upper- or
lower-case file names and headers. :func:`find_table` locates a table and
:func:`iter_rows` streams it as dicts keyed by LOWER-CASE column names, checking that
the required columns exist. Every failure is a :class:`~fedrx.errors.DataError` that
names the file and the problem.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedrx.errors import DataError

csv.field_size_limit(16 * 1024 * 1024)


def find_table(root: Path, name: str, *, required: bool = True) -> Path | None:
    """Return the path of table ``name`` (case-insensitive, ``.csv`` or ``.csv.gz``) in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    wanted = {f"{name.lower()}.csv", f"{name.lower()}.csv.gz"}
    matches = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower() in wanted)
    if not matches:
        if required:
            raise DataError(f"table '{name}' not found in {root} "
                            f"(expected {name}.csv or {name}.csv.gz)")
        return None
    # Prefer the uncompressed file when both exist.
    matches.sort(key=lambda p: p.name.lower().endswith(".gz"))
    return matches[0]


def open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")  # noqa: SIM115


def iter_rows(path: Path, required: Sequence[str]) -> Iterator[dict[str, str]]:
    """Stream rows of ``path`` as ``{lower-case column: value}``.

    Raises :class:`DataError` if the file is unreadable, has no header, or lacks a
    column in ``required`` (lower-case names).
    """
    try:
        fh = open_text(path)
    except OSError as exc:
        raise DataError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(f"{path} is empty (no header row)") from None
            cols = [h.strip().lower() for h in header]
            missing = [c for c in required if c not in cols]
            if missing:
                raise DataError(f"{path.name}: missing column(s) {', '.join(missing)}")
            n = len(cols)
            for lineno, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) != n:
                    raise DataError(
                        f"{path.name}:{lineno}: expected {n} fields, found {len(row)}"
                    )
                yield dict(zip(cols, row, strict=True))
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"cannot read {path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{path.name}: malformed CSV ({exc})") from None


def iter_columns(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """Stream ``(line number, [values of columns])`` rows of a CSV table.

    Headers are matched case-insensitively. A zero-byte file, a missing column, a row
    shorter than the header, or any decoding / decompression failure is a DataError.
    """
    try:
        with open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path} is empty (no header row)")
            names = [h.strip().lstrip("\ufeff").strip().lower() for h in header]
            index = {}
            for col in columns:
                if col not in names:
                    raise DataError(f"{path}: required column {col!r} is missing")
                index[col] = names.index(col)
            idx = [index[c] for c in columns]
            need = max(idx) + 1
            for row in reader:
                if not row:
                    continue
                if len(row) < need:
                    raise DataError(
                        f"{path}:{reader.line_num}: row has {len(row)} fields, "
                        f"header has {len(names)}"
                    )
                yield reader.line_num, [row[i] for i in idx]
    except (OSError, EOFError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"cannot read {path}: {reason or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise DataError(f"cannot read {path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"cannot read {path}: malformed CSV ({exc})") from None
