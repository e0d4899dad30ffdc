"""Deterministic samples of the ``ckks`` wire messages added for issue 14 item 6 (the confirm
stage; upload headers with sum tags; decrypt requests with confirmations), for the golden wire
vectors of tests/test_nodes_codec.py. Keys: the Envelope field name (or a variant of it)."""

from __future__ import annotations

from fedrx.secagg.ckks import messages as pc

SIG = bytes(range(64))


def ckks_golden_samples() -> dict[str, object]:
    hdr = pc.UploadHeader("h1", (b"a" * 32, b"b" * 32), SIG, (1, 2**56 - 5, 2**64 - 1))
    conf = pc.CkksConfirmation("h2", 3, SIG)
    return {
        "ckks_confirm_request": pc.CkksConfirmRequest(b"s" * 32, 3, b"i" * 32, (hdr,)),
        "ckks_confirmation": conf,
        "ckks_upload_tagged": pc.CkksUpload(3, b"i" * 32, hdr, (b"c1" * 40, b"c2" * 40)),
        "ckks_decrypt_request_confirmed": pc.CkksDecryptRequest(
            b"s" * 32, 3, b"i" * 32, (hdr,), (b"agg" * 30,), (conf, conf)),
    }
