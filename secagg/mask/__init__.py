"""Pairwise-mask secure aggregation (Bonawitz et al. CCS 2017; SecAgg+ graph, Bell et al.
CCS 2020) as explicit per-party state machines, free of transport code.

Stages (in order; ``consistency_check`` only in active mode):

``advertise_keys``
    Each hospital makes two fresh X25519 key pairs (``enc`` for share encryption, ``mask``
    for pairwise masks) and signs ``(session_id, round, context, hospital, enc_pk, mask_pk)``
    with its long-term Ed25519 key; ``context`` is the 32-byte digest of the agreed round
    context (:attr:`MaskingParams.context`). U1 = hospitals whose advertisement verifies.
``share_keys``
    The aggregator relays to each hospital ONLY its neighbourhood's advertisements (all of U1
    on the complete graph). A hospital verifies each against the pinned keys and its OWN
    context and aborts on any that fails (forged, replayed, or made for another model,
    participant list, threshold or graph seed), on a non-neighbour's, and on a public key
    advertised twice: before any share leaves it. The round session id ``sid_r =
    SHA-256(session_id, round, context)`` salts every key. A fresh 32-byte self-mask seed
    ``b`` (os.urandom) and the raw mask secret key are Shamir-shared t-of-|holders| (holders =
    neighbours that advertised, plus self), over GF(2**256 + 297) (33-byte shares). Each
    holder's pair of shares is AEAD-encrypted to it (AES-GCM; plaintext ``b_share ||
    mask_key_share``, 66 bytes; key from X25519 of the two ``enc`` keys, directional; AD =
    sid_r, round, sender, receiver). The pairwise mask keys ``k_hv`` (X25519 of the two
    ``mask`` keys, then HKDF) are agreed here too. U2 = hospitals whose shares arrived.
``masked_input``
    ``y = x + PRG(b) + sum_{v in N∩U2, v > h} PRG(k_hv) - sum_{v in N∩U2, v < h} PRG(k_hv)``
    mod ``R = 2**m``, bit-packed to m bits per entry. U3 = hospitals whose input arrived.
``consistency_check`` (active mode)
    Each hospital is sent L_h, its neighbourhood's part of U3 (all of U3 on the complete
    graph; at least t of it), and signs ``(sid_r, round, context, L_h)``.
``unmask``
    A hospital gets its neighbourhood's survivor and dropped lists and the signatures of the
    hospitals within two hops. For each owner whose shares it holds it needs t valid
    signatures from the OWNER's neighbourhood over lists agreeing with its own (on the
    complete graph: t signatures on the identical list), then reveals EITHER the b-share
    (owner alive) OR the mask-key share (owner dropped), never both. It aborts when the
    lists overlap, name itself as dropped, name a non-neighbour, disagree with what it saw or
    signed, hold fewer than t (or ``min_contributors``) survivors. See threat_model.md §4.3
    for why per-neighbourhood certification suffices (Bell et al. 2020).

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
