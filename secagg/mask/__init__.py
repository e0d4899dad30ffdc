"""Pairwise-mask secure aggregation (Bonawitz et al. CCS 2017; SecAgg+ graph, Bell et al.
CCS 2020) as explicit per-party state machines, free of transport code.

Stages (in order; ``consistency_check`` only in active mode):

``advertise_keys``
    Each hospital makes two fresh X25519 key pairs (``enc`` for share encryption, ``mask``
    for pairwise masks) and signs ``(session_id, round, hospital, enc_pk, mask_pk)`` with its
    long-term Ed25519 key. U1 = hospitals whose advertisement verifies.
``share_keys``
    Every hospital verifies every advertisement against the federation's pinned keys and
    EXCLUDES peers whose signature fails (or which advertise for another round). The round
    session id ``sid_r = SHA-256(session_id, round, all accepted (hospital, enc_pk, mask_pk))``
    binds every later key. A fresh 32-byte self-mask seed ``b`` (os.urandom) and the raw
    mask secret key are Shamir-shared t-of-|holders| (holders = graph neighbours in U1 plus
    self), over GF(2**256 + 297) (33-byte shares). Each holder's pair of shares is
    AEAD-encrypted to it (AES-GCM; plaintext ``b_share || mask_key_share``, 66 bytes; key
    from X25519 of the two ``enc`` keys, directional; AD = sid_r, round, sender, receiver).
    The pairwise mask keys ``k_hv`` (X25519 of the two ``mask`` keys, then HKDF) are agreed
    in this stage too, once the advertisements are verified. U2 = hospitals whose shares
    arrived.
``masked_input``
    ``y = x + PRG(b) + sum_{v in N∩U2, v > h} PRG(k_hv) - sum_{v in N∩U2, v < h} PRG(k_hv)``
    mod ``R = 2**m``, bit-packed to m bits per entry. U3 = hospitals whose input arrived.
``consistency_check`` (active mode)
    Each hospital signs ``(sid_r, round, U3, model_hash)``; before unmasking it requires at
    least t valid signatures from members of U3 on exactly the list it signed.
``unmask``
    For each peer whose shares it holds, a hospital reveals EITHER the b-share (peer in U3)
    OR the mask-key share (peer in U2 \\ U3), never both in one round. It aborts when the
    alive and dropped lists overlap, name itself as dropped, disagree with what it saw or
    signed, or hold fewer than t survivors.

Dropouts at any stage are tolerated while at least t hospitals remain (per neighbourhood
for SecAgg+); below t a party raises :class:`fedrx.errors.ProtocolAbort` before revealing
anything.
Deadlines are the transport's job: a stage's ``collect`` only sees replies that arrived.

All randomness comes from the OS (``os.urandom``, ``secrets``, ``cryptography`` keygen).
No exception message or repr contains key material, seeds, shares or inputs.

Modules: ``params`` (round parameters, stage names), ``messages`` (one dataclass per
message), ``transcript`` (what is signed and hashed), the hospital's states ``client_keys``,
``client_shares``, ``client_masked_input``, ``client_consistency``, ``client_unmask``
(driven by ``client.MaskingClient``) and the aggregator's ``server_keys``,
``server_masked_input``, ``server_unmask`` (driven by ``server.MaskingServer``, one
``server_status.PeerStatus`` per peer).
"""
