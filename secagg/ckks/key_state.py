"""Long-lived CKKS key state, split by role.

* :class:`AggregatorKeyState`: the current epoch's PUBLIC material (signed manifest, key-less
  public context, the sealed packages it relays), which hospitals confirmed the epoch (uploaded
  under it: they need no package any more), and the round the epoch was first used in. It never
  holds a secret key; :meth:`AggregatorKeyState.checkpoint` serialises exactly this epoch.
* :class:`HospitalKeyState`: one hospital's opened secret key of its newest epoch. It never
  leaves the node (no serialisation, hidden from ``repr``).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedrx.errors import ConfigError, CryptoError, ProtocolAbort
from fedrx.secagg.ckks.ciphertext import CkksPublicContext
from fedrx.secagg.ckks.keyring import CkksKeyring
from fedrx.secagg.ckks.keyring_json import keyring_from_json, keyring_to_json
from fedrx.secagg.ckks.messages import KeyDelivery
from fedrx.secagg.ckks.params import CkksConfig
from fedrx.secagg.ckks.secret import CkksSecretKey
from fedrx.secagg.identity import Federation, Identity


class AggregatorKeyState:
    """The aggregator's key epoch: public data and sealed packages only."""

    def __init__(self, federation: Federation, config: CkksConfig):
        self.federation = federation
        self.config = config
        self.keyring: CkksKeyring | None = None
        self._public: CkksPublicContext | None = None
        self._confirmed: dict[bytes, set[str]] = {}
        self._epoch_round: int | None = None

    def __repr__(self) -> str:
        epoch = None if self.keyring is None else self.keyring.epoch
        return f"AggregatorKeyState(epoch={epoch})"

    def install(self, keyring: CkksKeyring, round_: int | None = None) -> None:
        """Adopt a (verified) newer epoch, first used in ``round_``.

        CryptoError if it is not signed by its key holder, ConfigError if it is not newer."""
        if self.keyring is not None and keyring.epoch <= self.keyring.epoch:
            raise ConfigError(f"key epoch {keyring.epoch} is not newer than {self.keyring.epoch}")
        public = keyring.server_context(self.federation)
        if public.params != self.config.params:
            raise CryptoError("keyring parameters differ from the configured CKKS parameters")
        self.keyring, self._public, self._epoch_round = keyring, public, round_
        self._confirmed = {keyring.key_id: set()}

    def public_context(self) -> CkksPublicContext:
        if self._public is None:
            raise ProtocolAbort("no CKKS key epoch installed")
        return self._public

    def next_epoch(self, round_: int) -> int | None:
        """The epoch the ``keys`` stage of round ``round_`` must create (None: keep the
        current one). A restored or pre-distributed epoch counts from its first round."""
        if self.keyring is None:
            return 1
        if self._epoch_round is None:
            self._epoch_round = round_
        elif (self.config.rotate_every is not None
              and round_ - self._epoch_round >= self.config.rotate_every):
            return self.keyring.epoch + 1
        return None

    def confirmed(self, key_id: bytes) -> set[str]:
        return self._confirmed.get(key_id, set())

    def confirm(self, key_id: bytes, hospitals: Sequence[str]) -> None:
        self._confirmed.setdefault(key_id, set()).update(hospitals)

    def reconnected(self, hospitals: Sequence[str]) -> None:
        """Relay the current epoch's sealed package to ``hospitals`` again at their next
        upload (e.g. a restarted hospital process holds no key). A hospital that still holds
        the epoch ignores the repeat."""
        for seen in self._confirmed.values():
            seen.difference_update(hospitals)

    def delivery_for(self, hospital: str) -> KeyDelivery | None:
        """What to attach to ``hospital``'s upload request: its sealed package until it has
        uploaded under the current epoch once."""
        ring = self.keyring
        if ring is None or hospital in self.confirmed(ring.key_id) or hospital not in ring.packages:
            return None
        return KeyDelivery(ring.manifest, ring.public_context, ring.packages[hospital])

    def checkpoint(self) -> bytes | None:
        """The current epoch as canonical JSON (:mod:`.keyring_json`); None if there is none."""
        return None if self.keyring is None else keyring_to_json(self.keyring)

    def restore(self, blob: bytes) -> None:
        """Re-install a checkpointed epoch, verified again as :meth:`install` does and every
        package's key-holder signature checked; every hospital gets its package relayed again.

        CryptoError on a malformed, tampered or unsigned blob."""
        ring = keyring_from_json(blob)
        for h, pkg in ring.packages.items():
            if pkg.recipient != h:
                raise CryptoError(f"checkpointed CKKS package for {h!r} is addressed to "
                                  f"{pkg.recipient!r}")
            pkg.verify(self.federation, ring.manifest.key_holder)
        self.install(ring)


class HospitalKeyState:
    """One hospital's secret key of its newest epoch (and, optionally, a pre-distributed
    keyring to open it from). Never serialised; ``repr`` shows only the epoch."""

    def __init__(self, identity: Identity, federation: Federation, config: CkksConfig,
                 keyring: CkksKeyring | None = None):
        self.identity = identity
        self.federation = federation
        self.config = config
        self._keyring = keyring
        self._key: CkksSecretKey | None = None

    def __repr__(self) -> str:
        epoch = None if self._key is None else self._key.epoch
        return f"HospitalKeyState(hospital={self.identity.hospital!r}, epoch={epoch})"

    @property
    def hospital(self) -> str:
        return self.identity.hospital

    def held(self) -> CkksSecretKey | None:
        """The newest opened epoch key (opening the pre-distributed package if newer)."""
        ring, key = self._keyring, self._key
        if ring is not None and self.hospital in ring.packages and (
                key is None or key.epoch < ring.epoch):
            try:
                key = self._key = ring.open(self.identity, self.federation)
            except CryptoError as exc:
                raise ProtocolAbort(f"cannot open the CKKS key package: {exc}") from None
        return key

    def create_epoch(self, epoch: int, federation_id: bytes) -> CkksKeyring:
        """Key holder: make epoch ``epoch`` (newer than any it holds) and keep its own key."""
        held = self._key
        if held is not None and epoch <= held.epoch:
            raise ProtocolAbort(f"refusing to create key epoch {epoch}: already at "
                                f"{held.epoch}")
        ring = CkksKeyring.create(self.identity, self.federation, epoch=epoch,
                                  federation_id=federation_id, params=self.config.params)
        self._key = ring.open(self.identity, self.federation)
        return ring

    def accept(self, d: KeyDelivery) -> None:
        """Open a relayed package if it is for a NEWER epoch than the one held."""
        held = self._key
        if held is not None and d.manifest.key_id == held.key_id:
            return
        if held is not None and d.manifest.epoch <= held.epoch:
            raise ProtocolAbort(f"refusing key epoch {d.manifest.epoch}: already at "
                                f"{held.epoch} (rollback)")
        if d.manifest.params != self.config.params:
            raise ProtocolAbort("delivered key epoch uses other CKKS parameters")
        ring = CkksKeyring(d.manifest, d.public_context, {self.hospital: d.package})
        try:
            self._key = ring.open(self.identity, self.federation)
        except CryptoError as exc:
            raise ProtocolAbort(f"cannot open the relayed CKKS key package: {exc}") from None
