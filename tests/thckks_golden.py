"""One deterministic sample of every ``ckks-threshold`` wire message (synthetic bytes: the
codec checks sizes and shapes, not cryptography), for the golden wire vectors of
tests/test_nodes_codec.py. Keys: the Envelope field name."""

from __future__ import annotations

from fedrx.secagg.thckks import messages as tm

SIG = bytes(range(64))


def thckks_golden_samples() -> dict[str, object]:
    nonce = tm.ThNonce("h1", 2, b"n" * 32, SIG)
    contrib = tm.ThContribution("h1", 2, b"pub" * 30, (b"d" * 32, b"e" * 32), SIG)
    upload = tm.ThUpload("h1", 3, b"i" * 32, (b"c1" * 40, b"c2" * 40), SIG)
    return {
        "th_crs_request": tm.ThCrsRequest(b"s" * 32, 3, 2, ("h1", "h2"), 2),
        "th_nonce": nonce,
        "th_keygen_request": tm.ThKeygenRequest(b"s" * 32, 3, 2, ("h1", "h2"), 2,
                                                (nonce, tm.ThNonce("h2", 2, b"m" * 32, SIG))),
        "th_keygen_reply": tm.ThKeygenReply(contrib, (b"box1" * 20, b"box2" * 20)),
        "th_keyshares_request": tm.ThKeysharesRequest(b"s" * 32, 3, 2, (contrib,),
                                                      (b"box1" * 20,)),
        "th_key_ack": tm.ThKeyAck("h2", 2, b"k" * 32, SIG),
        "th_upload_request": tm.ThUploadRequest(b"s" * 32, 3, b"i" * 32, 5000),
        "th_upload": upload,
        "th_decrypt_request": tm.ThDecryptRequest(b"s" * 32, 3, b"i" * 32, (upload,),
                                                  ("h1", "h2")),
        "th_partial": tm.ThPartial("h2", 3, b"i" * 32, ("h1",), (b"p" * 50,)),
    }
