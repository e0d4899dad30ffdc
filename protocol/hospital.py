"""The hospital side of a round: an explicit state machine around local training and the
protection client.

States per round: ``IDLE -> TRAINED -> PROTECTING -> DONE``; ``REFUSED`` (the hospital
declined to train, e.g. its privacy budget would be exceeded) and ``ABORTED`` (a check
failed) end the round for this hospital. Every request is validated WHOLE before it is
acted on, against what the hospital pinned and computes itself (the agreed round context,
:mod:`fedrx.protocol.context`): the session must be the one derived from the pinned
federation, the round newer than any seen (replay) and within the pinned bound, the
participants sorted, distinct, pinned members and at least the pinned round size, the model
hash must match the weights, the protection level must be the one this hospital was
configured with (no downgrade), its own example count within the pinned bound; then the
protection's client for the round is built (its round parameters derived and checked,
e.g. ``mask``'s t and n_C from the federation size) BEFORE any training or ledger entry, so
a request that fails any check costs nothing. Protection stages must come in order; any
:class:`~fedrx.errors.FedrxError` of a stage aborts the round. Personalised metrics (a model
fine-tuned on training patients without DP) are kept in :attr:`HospitalParty.personal`,
never sent.

Re-use after an aggregator restart: with DP, the hospital keeps its last charged round's
protected input (:class:`KeptResult`: the vector ``[n * (w_local - w_global), n]`` computed
from the DP-SGD output, its round, model hash, participants and ledger head). A TrainRequest
for a NEWER round with the SAME model hash and the same participants, arriving before any
receipt of the charged round (the aggregator abandoned it: it restarted from the checkpoint
before that round), re-sends that vector instead of training again. The re-sent vector is
post-processing of an already-charged DP output: no new ledger entry, no new epsilon; the
TrainAck names the charged entry's ledger head. A kept result is re-used at most ONCE (so it
enters at most two aggregations, the abandoned one and its retry) and is dropped as soon as
a receipt arrives for either round (:meth:`HospitalParty.receipted`). Only parties with
``keep_results`` (the deployment's hospital nodes, whose rounds get receipts) keep results.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedrx.errors import FedrxError, ProtocolAbort, ProtocolError
from fedrx.protocol.messages import EVALUATE, TRAIN, EvalReport, EvalRequest, TrainAck, TrainRequest
from fedrx.protocol.protection import ClientProtection, Protection, RoundContext
from fedrx.protocol.task import ClientOptimizer, FederatedTask, derive_seed, model_hash


def check_request_types(req: TrainRequest, hospital: str) -> None:
    """ProtocolError unless every field of ``req`` has its declared type (an in-process
    caller is not bound by a wire codec)."""
    ok = (isinstance(req.session_id, bytes) and isinstance(req.round, int)
          and not isinstance(req.round, bool) and isinstance(req.participants, tuple | list)
          and all(isinstance(p, str) for p in req.participants)
          and isinstance(req.weights, np.ndarray) and req.weights.ndim == 1
          and req.weights.dtype.kind == "f" and isinstance(req.model_hash, str)
          and isinstance(req.protection, str) and isinstance(req.vector_length, int)
          and not isinstance(req.vector_length, bool) and isinstance(req.params, Mapping))
    if not ok:
        raise ProtocolError(f"{hospital}: malformed TrainRequest")


class HospitalState(enum.Enum):
    IDLE = "idle"
    TRAINED = "trained"
    PROTECTING = "protecting"
    DONE = "done"
    REFUSED = "refused"
    ABORTED = "aborted"


@dataclass
class RoundLog:
    """What the hospital did in one round (kept locally; feeds the privacy ledger)."""

    round: int
    state: HospitalState
    loss: float | None = None
    n_examples: int = 0
    dp: dict[str, Any] | None = None
    reason: str = ""
    reused_from: int = 0
    """The charged round whose protected input this round re-sent (0: trained here)."""


@dataclass
class KeptResult:
    """A charged round's protected input, kept for ONE retry of that round (see module doc).

    ``vector``: float64 ``[n * (w_local - w_global), n]``; ``participants``: sorted;
    ``ledger_head``: ``entry_hash`` of the ledger entry that charged it; ``reused_in``: the
    round that re-sent it (0: not yet)."""

    round: int
    model_hash: str
    participants: tuple[str, ...]
    vector: np.ndarray
    n_examples: int
    loss: float | None
    ledger_head: str
    reused_in: int = 0

    def usable_for(self, req: TrainRequest) -> bool:
        """True if ``req`` retries the abandoned round: same model, same participants,
        newer round, not re-used before."""
        return (self.reused_in == 0 and req.round > self.round
                and req.model_hash == self.model_hash
                and tuple(sorted(req.participants)) == self.participants
                and self.vector.shape == (req.vector_length,))

    def meta(self) -> dict[str, Any]:
        """Everything but the vector (JSON-able)."""
        return {"round": self.round, "model_hash": self.model_hash,
                "participants": list(self.participants), "n_examples": self.n_examples,
                "loss": self.loss, "ledger_head": self.ledger_head,
                "reused_in": self.reused_in}


class HospitalParty:
    """One hospital: private data, local trainer, and its own protection instance."""

    def __init__(self, hospital: str, task: FederatedTask, data: Any, protection: Protection,
                 client_optimizer: ClientOptimizer, seed: int = 0, dp: Any = None,
                 personalize_optimizer: ClientOptimizer | None = None):
        self.hospital = hospital
        self.task = task
        self.data = data
        self.protection = protection
        self.opt = client_optimizer
        self.personal_opt = personalize_optimizer or ClientOptimizer(
            client_optimizer.name, client_optimizer.lr, epochs=2,
            batch_size=client_optimizer.batch_size)
        self.seed = seed
        self.dp = dp
        self.state = HospitalState.IDLE
        self.last_round = 0
        self.current_round = 0
        self.stage_index = -1
        self.client: ClientProtection | None = None
        self.log: list[RoundLog] = []
        self.kept: KeptResult | None = None
        """The last charged round's protected input, while a retry may re-use it."""
        self.personal: dict[int, dict[str, Any]] = {}
        """Metric sums of the personalised model per round: kept at the hospital, never
        sent (the fine-tuning on training patients is not DP and not charged)."""
        self.context: RoundContext | None = None
        """The context of the newest round this hospital accepted (checked by itself)."""
        self.keep_results = False
        """Keep charged results for a retry: only where rounds get receipts (a deployment
        node calls :meth:`receipted`); the in-process simulation never abandons a round."""

    # -- helpers ----------------------------------------------------------------------
    def _abort(self, reason: str) -> ProtocolError:
        self.state = HospitalState.ABORTED
        if self.log and self.log[-1].round == self.current_round:
            self.log[-1].state = HospitalState.ABORTED
            self.log[-1].reason = reason
        return ProtocolAbort(f"{self.hospital}: {reason}")

    def handle(self, stage: str, request: Any) -> Any:
        """Answer one request from the aggregator. Raises ProtocolError to refuse it."""
        if stage == TRAIN:
            return self._on_train(request)
        if stage == EVALUATE:
            return self._on_evaluate(request)
        return self._on_protection_stage(stage, request)

    # -- train --------------------------------------------------------------------------
    def _on_train(self, req: Any) -> TrainAck:
        ctx = self._check_train(req)
        # everything below acts on a request checked whole: the protection's client exists
        # (its round parameters derived and checked) before any training or ledger entry
        try:
            client = self.protection.new_client(ctx, self.hospital)
        except FedrxError as exc:
            raise ProtocolError(f"{self.hospital}: round refused: {exc}") from None
        self.last_round = self.current_round = req.round
        self.stage_index = -1
        self.client = None
        self.context = ctx
        entry = RoundLog(req.round, HospitalState.IDLE)
        self.log.append(entry)
        kept = self.kept
        if self.dp is not None and kept is not None and kept.usable_for(req):
            entry.reused_from, kept.reused_in = kept.round, req.round
            vector, head = kept.vector, kept.ledger_head
            entry.loss, entry.n_examples = kept.loss, kept.n_examples
        else:
            self.kept = None
            if self.dp is not None:
                refusal = self.dp.begin_round(req.round, req.model_hash)
                if refusal:
                    self.state = entry.state = HospitalState.REFUSED
                    entry.reason = refusal
                    return TrainAck(req.round, self.hospital, "refused", refusal)
            vector, head = self._train(req, entry)
        try:
            client.set_input(vector)
        except FedrxError as exc:
            raise self._abort(f"protected input refused: {exc}") from None
        self.client = client
        self.state = entry.state = HospitalState.TRAINED
        return TrainAck(req.round, self.hospital, "trained", ledger_head=head)

    def _check_train(self, req: Any) -> RoundContext:
        """Check a TrainRequest whole against what this hospital pinned and computes itself
        (:mod:`fedrx.protocol.context`) -> the round context it will sign; ProtocolError
        (a clean refusal, nothing changed) otherwise."""
        h = self.hospital
        if not isinstance(req, TrainRequest):
            raise ProtocolError(f"{h}: expected a TrainRequest")
        check_request_types(req, h)
        if req.round <= self.last_round:
            raise ProtocolError(f"{h}: round {req.round} is not newer than "
                                f"{self.last_round} (replay?)")
        if h not in req.participants:
            raise ProtocolError(f"{h}: not listed as a participant")
        if list(req.participants) != sorted(set(req.participants)):
            raise ProtocolError(f"{h}: participants must be sorted and distinct")
        pinned = self.protection.pinned
        if pinned is not None:
            pinned.check_round(h, req.session_id, req.round, req.participants)
        if req.protection != self.protection.name:
            raise ProtocolError(f"{h}: aggregator asked for protection "
                                f"{req.protection!r}, this hospital requires "
                                f"{self.protection.name!r}")
        mh = model_hash(req.weights)
        if mh != req.model_hash:
            raise ProtocolError(f"{h}: global model does not match its hash")
        self.task.check_weights(req.weights)  # before any budget is charged
        n_params = req.weights.size
        if req.vector_length != n_params + 1:
            raise ProtocolError(f"{h}: vector length {req.vector_length} != "
                                f"{n_params} parameters + 1")
        if pinned is not None and pinned.max_examples is not None:
            own = self.task.n_train_examples(self.data)
            if own > pinned.max_examples:
                raise ProtocolError(f"{h}: {own} training examples exceed the pinned "
                                    f"bound {pinned.max_examples}")
        # req.params is never read: every round parameter comes from the pinned
        # configuration (test_dp_federation: hostile DP parameters are ignored)
        return RoundContext(req.session_id, req.round, tuple(req.participants),
                            req.vector_length, {}, model_hash=mh)

    def _train(self, req: TrainRequest, entry: RoundLog) -> tuple[np.ndarray, str]:
        """Local training (DP-SGD when configured: the ledger entry is written first) ->
        (protected input, ledger head); with DP the input is kept for one retry."""
        round_seed = derive_seed(self.seed, self.hospital, req.round)
        result = self.task.local_train(req.weights, self.data, self.opt, round_seed, dp=self.dp)
        if "protected_input" in result.extra:  # distributed DP: the noisy share itself
            entry.loss, entry.n_examples, entry.dp = result.loss, result.n_examples, result.dp
            return result.extra["protected_input"], self.dp.ledger_head()  # never kept
        delta = result.weights.astype(np.float64) - req.weights.astype(np.float64)
        n = float(result.n_examples)
        vector = np.concatenate([delta * n, [n]])
        entry.loss, entry.n_examples, entry.dp = result.loss, result.n_examples, result.dp
        if self.dp is None:
            return vector, ""
        head = self.dp.ledger_head()
        if self.keep_results:
            self.kept = KeptResult(req.round, req.model_hash, tuple(sorted(req.participants)),
                                   vector, result.n_examples, result.loss, head)
        return vector, head

    def receipted(self, rnd: int) -> None:
        """A receipt of round ``rnd`` arrived: a kept result used in that round is spent."""
        if self.kept is not None and rnd in (self.kept.round, self.kept.reused_in):
            self.kept = None

    def head_of(self, rnd: int) -> str | None:
        """The ledger head this hospital named for round ``rnd`` if that round re-used a
        kept result (None otherwise: the ledger entry of that round is the head)."""
        if self.kept is not None and self.kept.reused_in == rnd:
            return self.kept.ledger_head
        return None

    # -- protection stages ----------------------------------------------------------------
    def _on_protection_stage(self, stage: str, request: Any) -> Any:
        if self.client is None or self.state not in (HospitalState.TRAINED,
                                                     HospitalState.PROTECTING):
            raise ProtocolError(f"{self.hospital}: stage {stage!r} outside a trained round")
        stages = self.protection.stages
        if stage not in stages:
            raise self._abort(f"unknown stage {stage!r}")
        idx = stages.index(stage)
        if idx <= self.stage_index:
            raise self._abort(f"stage {stage!r} repeated or out of order")
        rnd = getattr(request, "round", self.current_round)
        if rnd != self.current_round:
            raise self._abort(f"request for round {rnd} during round {self.current_round}")
        self.stage_index = idx
        self.state = HospitalState.PROTECTING
        try:
            reply = self.client.handle(stage, request)
        except FedrxError as exc:
            raise self._abort(str(exc)) from None
        if idx == len(stages) - 1:
            self.state = HospitalState.DONE
            self.log[-1].state = HospitalState.DONE
        return reply

    # -- evaluation -----------------------------------------------------------------------
    def _on_evaluate(self, req: Any) -> EvalReport:
        if not isinstance(req, EvalRequest):
            raise ProtocolError(f"{self.hospital}: expected an EvalRequest")
        if not (isinstance(req.weights, np.ndarray) and req.weights.ndim == 1
                and isinstance(req.model_hash, str) and req.part in ("test", "val")
                and isinstance(req.round, int) and isinstance(req.personalize, bool)):
            raise ProtocolError(f"{self.hospital}: malformed EvalRequest")
        if model_hash(req.weights) != req.model_hash:
            raise ProtocolError(f"{self.hospital}: model does not match its hash")
        self.task.check_weights(req.weights)
        sums = self.task.evaluate(req.weights, self.data, req.part).as_dict()
        out: dict[str, Any] = {"global": sums}
        if req.part == "test":  # the held-out validation patients, for model selection
            out["val"] = self.task.evaluate(req.weights, self.data, "val").as_dict()
        if req.personalize is True:
            # fine-tuned on this hospital's TRAINING patients without DP: its metrics stay
            # here (self.personal); releasing them would be an uncharged release
            seed = derive_seed(self.seed, self.hospital, "personal", req.round)
            personal = self.task.personalize(req.weights, self.data, self.personal_opt, seed)
            self.personal[req.round] = self.task.evaluate(personal, self.data,
                                                          req.part).as_dict()
        return EvalReport(req.round, self.hospital, out)
