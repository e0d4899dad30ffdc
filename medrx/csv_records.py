"""Byte-faithful CSV record streaming for filtered copies of EHR tables.

:func:`read_records` yields each CSV record of a table as its ORIGINAL text (quoting, line
endings and embedded newlines untouched) together with one chosen field, so a filtered
copy written with :class:`RecordWriter` keeps the source's header and rows byte for byte:
only whole records are dropped. Text is decoded as UTF-8 with ``surrogateescape``, so
bytes that are not UTF-8 survive the round trip unchanged.

A ``.gz`` name is read and written gzip-compressed (written with ``mtime=0``, so the same
records always give the same bytes); any other name is plain text.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from fedrx.errors import DataError

csv.field_size_limit(16 * 1024 * 1024)

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


class _LineTap:
    """Iterator over the physical lines of a file that remembers the lines not yet taken."""

    def __init__(self, fh: io.TextIOBase):
        self._fh = fh
        self._buf: list[str] = []

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._fh)
        self._buf.append(line)
        return line

    def take(self) -> str:
        text = "".join(self._buf)
        self._buf.clear()
        return text


def _open_text(path: Path) -> io.TextIOWrapper:
    raw = gzip.open(path, "rb") if is_gz(path) else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding=_ENCODING, errors=_ERRORS, newline="")


def read_records(path: Path, column: str | None) -> Iterator[tuple[str, str | None]]:
    """Yield ``(raw text, value of column)`` for every record of ``path``.

    The FIRST item is the header record (value None). ``column`` is matched
    case-insensitively (a leading BOM ignored); None yields no values. Blank lines are
    skipped. A record's text always ends in a line break (the header's style is added to a
    last line that lacks one). A missing column, an empty file, a short row, a corrupt gzip
    or malformed CSV is a :class:`DataError` naming the file.
    """
    try:
        with _open_text(path) as fh:
            tap = _LineTap(fh)
            reader = csv.reader(tap)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path} is empty (no header row)")
            head_text = tap.take()
            eol = "\r\n" if head_text.endswith("\r\n") else "\n"
            if not head_text.endswith(("\n", "\r")):
                head_text += eol
            names = [h.strip().lstrip("\ufeff").strip().lower() for h in header]
            index = -1
            if column is not None:
                if column not in names:
                    raise DataError(f"{path}: required column {column!r} is missing")
                index = names.index(column)
            yield head_text, None
            for row in reader:
                text = tap.take()
                if not row:
                    continue
                if not text.endswith(("\n", "\r")):
                    text += eol
                if index < 0:
                    yield text, None
                    continue
                if len(row) <= index:
                    raise DataError(f"{path}:{reader.line_num}: row has {len(row)} fields, "
                                    f"header has {len(names)}")
                yield text, row[index].strip()
    except DataError:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"cannot read {path}: {reason or type(exc).__name__}") from None
    except csv.Error as exc:
        raise DataError(f"cannot read {path}: malformed CSV ({exc})") from None


def header_names(path: Path) -> list[str]:
    """The lower-case column names of ``path`` (reads only the header record)."""
    records = read_records(path, None)
    try:
        text, _ = next(records)
    finally:
        records.close()
    return [h.strip().lstrip("\ufeff").strip().lower() for h in next(csv.reader([text]))]


def column_values(path: Path, columns: tuple[str, ...]) -> Iterator[list[str]]:
    """Yield the stripped values of ``columns`` (lower-case names) for every data row."""
    names: list[str] | None = None
    idx: list[int] = []
    for text, _ in read_records(path, None):
        row = next(csv.reader([text]))
        if names is None:
            names = [h.strip().lstrip("\ufeff").strip().lower() for h in row]
            for c in columns:
                if c not in names:
                    raise DataError(f"{path}: required column {c!r} is missing")
            idx = [names.index(c) for c in columns]
            continue
        if len(row) <= max(idx):
            raise DataError(f"{path}: row has {len(row)} fields, header has {len(names)}")
        yield [row[i].strip() for i in idx]


class RecordWriter:
    """Writes raw record text to ``path`` (gzip when the name ends in ``.gz``), fsynced on
    :meth:`close`. The gzip header names the inner file, as ``gzip FILE`` does."""

    def __init__(self, path: Path):
        self.path = path
        self.records = 0
        self._raw = open(path, "xb")  # noqa: SIM115
        self._gz: gzip.GzipFile | None = None
        if is_gz(path):
            self._gz = gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=self._raw,
                                     mtime=0)
        self._out = self._gz if self._gz is not None else self._raw

    def write(self, text: str, *, header: bool = False) -> None:
        self._out.write(text.encode(_ENCODING, _ERRORS))
        if not header:
            self.records += 1

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
