"""One CKKS key epoch shared by the tests of :mod:`fedrx.secagg.ckks` (three hospitals,
``h0`` the key holder): ``fed`` = (identities, federation), ``ring``, ``keys`` (opened)."""

from __future__ import annotations

import os

import pytest

from fedrx.secagg.ckks.keyring import CkksKeyring
from fedrx.secagg.identity import Federation, Identity

HOSPITALS = ("h0", "h1", "h2")


def epoch_fixtures():
    """Fresh module-scoped ``fed``, ``ring`` and ``keys`` fixtures for one test module."""

    @pytest.fixture(scope="module")
    def fed():
        ids = {h: Identity.generate(h) for h in HOSPITALS}
        return ids, Federation.of(list(ids.values()))

    @pytest.fixture(scope="module")
    def ring(fed):
        ids, federation = fed
        return CkksKeyring.create(ids["h0"], federation, epoch=1, federation_id=os.urandom(32))

    @pytest.fixture(scope="module")
    def keys(fed, ring):
        ids, federation = fed
        return {h: ring.open(ids[h], federation) for h in HOSPITALS}

    return fed, ring, keys
