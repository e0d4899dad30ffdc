"""Atomic writes: a failure mid-write leaves the old file intact and no temp file behind."""

from __future__ import annotations

import os
import stat

import pytest

from fedrx.atomic import atomic_write_bytes, atomic_write_text
from fedrx.secagg.identity import Identity


def test_replace_and_mode(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two", mode=0o600)
    assert p.read_text() == "two"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_crash_during_write_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def boom(fd):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"new" * 1000)
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.bin"]


def test_identity_file_is_private_and_roundtrips(tmp_path):
    ident = Identity.generate("h1")
    ident.save(tmp_path / "h1.key")
    assert stat.S_IMODE((tmp_path / "h1.key").stat().st_mode) == 0o600
    again = Identity.load(tmp_path / "h1.key")
    assert again.public == ident.public
    assert "hidden" in repr(again) and again.public.sign_public.hex() not in repr(again)
