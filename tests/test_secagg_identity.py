"""Long-term identities: signature verification raises, never returns False."""

from __future__ import annotations

import pytest

from fedrx.errors import (
    SignatureError,
)
from fedrx.secagg.identity import Federation, Identity, PublicIdentity


def test_signature_verification_raises_never_returns_false():
    """RFC 8032 §7.1 test 1 (Ed25519, empty message) through the pinned-key API: a valid
    signature returns None; a tampered signature or message, a malformed signature and a
    hospital outside the federation each raise SignatureError (never a False to forget)."""
    pk = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    pub = PublicIdentity("h1", pk, bytes(32))
    fed = Federation({"h1": pub})
    assert pub.verify(sig, b"") is None
    assert fed.verify("h1", sig, b"") is None
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    for args in ((bad, b""), (sig, b"x"), (sig[:-1], b"")):
        with pytest.raises(SignatureError, match="signature of h1 does not verify"):
            pub.verify(*args)
        with pytest.raises(SignatureError):
            fed.verify("h1", *args)
    with pytest.raises(SignatureError, match="not in the federation"):
        fed.verify("h2", sig, b"")
    ident = Identity.generate("h3")
    Federation.of([ident]).verify("h3", ident.sign(b"m"), b"m")
