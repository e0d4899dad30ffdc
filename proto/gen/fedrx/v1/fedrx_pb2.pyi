from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Header(_message.Message):
    __slots__ = ("session_id", "round", "stage", "seq")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    stage: str
    seq: int
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., stage: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class HospitalFrame(_message.Message):
    __slots__ = ("header", "hello", "message", "chunk", "error")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    header: Header
    hello: Hello
    message: Envelope
    chunk: Chunk
    error: Error
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., message: _Optional[_Union[Envelope, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class AggregatorFrame(_message.Message):
    __slots__ = ("header", "welcome", "message", "chunk", "error", "result", "goodbye")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    header: Header
    welcome: Welcome
    message: Envelope
    chunk: Chunk
    error: Error
    result: RoundResult
    goodbye: Goodbye
    def __init__(self, header: _Optional[_Union[Header, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., message: _Optional[_Union[Envelope, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., result: _Optional[_Union[RoundResult, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "total_bytes", "sha256", "last", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    total_bytes: int
    sha256: bytes
    last: bool
    data: bytes
    def __init__(self, index: _Optional[int] = ..., total_bytes: _Optional[int] = ..., sha256: _Optional[bytes] = ..., last: _Optional[bool] = ..., data: _Optional[bytes] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("protocol_version", "hospital", "sign_public", "task_digest", "protection", "last_round")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    SIGN_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    TASK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    hospital: str
    sign_public: bytes
    task_digest: str
    protection: str
    last_round: int
    def __init__(self, protocol_version: _Optional[int] = ..., hospital: _Optional[str] = ..., sign_public: _Optional[bytes] = ..., task_digest: _Optional[str] = ..., protection: _Optional[str] = ..., last_round: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("protocol_version", "federation_id", "protection", "next_round", "rounds")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_FIELD_NUMBER: _ClassVar[int]
    NEXT_ROUND_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    federation_id: str
    protection: str
    next_round: int
    rounds: int
    def __init__(self, protocol_version: _Optional[int] = ..., federation_id: _Optional[str] = ..., protection: _Optional[str] = ..., next_round: _Optional[int] = ..., rounds: _Optional[int] = ...) -> None: ...

class RoundResult(_message.Message):
    __slots__ = ("round", "status", "reason", "contributors", "model_hash", "ledger_head", "receipt", "signature")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    LEDGER_HEAD_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    round: int
    status: str
    reason: str
    contributors: _containers.RepeatedScalarFieldContainer[str]
    model_hash: str
    ledger_head: str
    receipt: bytes
    signature: bytes
    def __init__(self, round: _Optional[int] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., contributors: _Optional[_Iterable[str]] = ..., model_hash: _Optional[str] = ..., ledger_head: _Optional[str] = ..., receipt: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Array(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Number(_message.Message):
    __slots__ = ("real", "integer")
    REAL_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    real: float
    integer: int
    def __init__(self, real: _Optional[float] = ..., integer: _Optional[int] = ...) -> None: ...

class MetricSums(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Number
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Number, _Mapping]] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.MessageMap[str, Number]
    def __init__(self, values: _Optional[_Mapping[str, Number]] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("session_id", "round", "participants", "weights", "model_hash", "protection", "vector_length", "params_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    participants: _containers.RepeatedScalarFieldContainer[str]
    weights: Array
    model_hash: str
    protection: str
    vector_length: int
    params_json: str
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., participants: _Optional[_Iterable[str]] = ..., weights: _Optional[_Union[Array, _Mapping]] = ..., model_hash: _Optional[str] = ..., protection: _Optional[str] = ..., vector_length: _Optional[int] = ..., params_json: _Optional[str] = ...) -> None: ...

class TrainAck(_message.Message):
    __slots__ = ("round", "hospital", "status", "reason", "ledger_head")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LEDGER_HEAD_FIELD_NUMBER: _ClassVar[int]
    round: int
    hospital: str
    status: str
    reason: str
    ledger_head: str
    def __init__(self, round: _Optional[int] = ..., hospital: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., ledger_head: _Optional[str] = ...) -> None: ...

class EvalRequest(_message.Message):
    __slots__ = ("round", "weights", "model_hash", "part", "personalize")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZE_FIELD_NUMBER: _ClassVar[int]
    round: int
    weights: Array
    model_hash: str
    part: str
    personalize: bool
    def __init__(self, round: _Optional[int] = ..., weights: _Optional[_Union[Array, _Mapping]] = ..., model_hash: _Optional[str] = ..., part: _Optional[str] = ..., personalize: _Optional[bool] = ...) -> None: ...

class EvalReport(_message.Message):
    __slots__ = ("round", "hospital", "sums")
    class SumsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricSums
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricSums, _Mapping]] = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    SUMS_FIELD_NUMBER: _ClassVar[int]
    round: int
    hospital: str
    sums: _containers.MessageMap[str, MetricSums]
    def __init__(self, round: _Optional[int] = ..., hospital: _Optional[str] = ..., sums: _Optional[_Mapping[str, MetricSums]] = ...) -> None: ...

class PlainUploadRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class PlainUpload(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: Array
    def __init__(self, vector: _Optional[_Union[Array, _Mapping]] = ...) -> None: ...

class AdvertiseRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class AdvertiseKeys(_message.Message):
    __slots__ = ("hospital", "round", "enc_public", "mask_public", "signature")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ENC_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    MASK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., enc_public: _Optional[bytes] = ..., mask_public: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ShareKeysRequest(_message.Message):
    __slots__ = ("round", "advertised")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ADVERTISED_FIELD_NUMBER: _ClassVar[int]
    round: int
    advertised: _containers.RepeatedCompositeFieldContainer[AdvertiseKeys]
    def __init__(self, round: _Optional[int] = ..., advertised: _Optional[_Iterable[_Union[AdvertiseKeys, _Mapping]]] = ...) -> None: ...

class EncryptedShare(_message.Message):
    __slots__ = ("sender", "receiver", "nonce", "ciphertext")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    sender: str
    receiver: str
    nonce: bytes
    ciphertext: bytes
    def __init__(self, sender: _Optional[str] = ..., receiver: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class ShareKeysReply(_message.Message):
    __slots__ = ("hospital", "round", "shares")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class MaskedInputRequest(_message.Message):
    __slots__ = ("round", "shares")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[EncryptedShare]
    def __init__(self, round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[EncryptedShare, _Mapping]]] = ...) -> None: ...

class MaskedInput(_message.Message):
    __slots__ = ("hospital", "round", "modulus_bits", "length", "packed")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODULUS_BITS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    modulus_bits: int
    length: int
    packed: bytes
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., modulus_bits: _Optional[int] = ..., length: _Optional[int] = ..., packed: _Optional[bytes] = ...) -> None: ...

class ConsistencyRequest(_message.Message):
    __slots__ = ("round", "survivors")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    round: int
    survivors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., survivors: _Optional[_Iterable[str]] = ...) -> None: ...

class ConsistencySignature(_message.Message):
    __slots__ = ("hospital", "round", "signature", "outside")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    OUTSIDE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    signature: bytes
    outside: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., signature: _Optional[bytes] = ..., outside: _Optional[_Iterable[str]] = ...) -> None: ...

class UnmaskRequest(_message.Message):
    __slots__ = ("round", "survivors", "dropped", "signatures")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    round: int
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    signatures: _containers.RepeatedCompositeFieldContainer[ConsistencySignature]
    def __init__(self, round: _Optional[int] = ..., survivors: _Optional[_Iterable[str]] = ..., dropped: _Optional[_Iterable[str]] = ..., signatures: _Optional[_Iterable[_Union[ConsistencySignature, _Mapping]]] = ...) -> None: ...

class RevealedShare(_message.Message):
    __slots__ = ("owner", "kind", "share")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    owner: str
    kind: str
    share: bytes
    def __init__(self, owner: _Optional[str] = ..., kind: _Optional[str] = ..., share: _Optional[bytes] = ...) -> None: ...

class UnmaskReply(_message.Message):
    __slots__ = ("hospital", "round", "shares")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    shares: _containers.RepeatedCompositeFieldContainer[RevealedShare]
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., shares: _Optional[_Iterable[_Union[RevealedShare, _Mapping]]] = ...) -> None: ...

class CkksParams(_message.Message):
    __slots__ = ("poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits", "noise_sigma", "tail")
    POLY_MODULUS_DEGREE_FIELD_NUMBER: _ClassVar[int]
    COEFF_MOD_BIT_SIZES_FIELD_NUMBER: _ClassVar[int]
    SCALE_BITS_FIELD_NUMBER: _ClassVar[int]
    NOISE_SIGMA_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    poly_modulus_degree: int
    coeff_mod_bit_sizes: _containers.RepeatedScalarFieldContainer[int]
    scale_bits: int
    noise_sigma: float
    tail: float
    def __init__(self, poly_modulus_degree: _Optional[int] = ..., coeff_mod_bit_sizes: _Optional[_Iterable[int]] = ..., scale_bits: _Optional[int] = ..., noise_sigma: _Optional[float] = ..., tail: _Optional[float] = ...) -> None: ...

class EpochManifest(_message.Message):
    __slots__ = ("federation_id", "epoch", "key_holder", "params", "public_context_sha256", "key_commitment", "recipients", "signature")
    FEDERATION_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_HOLDER_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_SHA256_FIELD_NUMBER: _ClassVar[int]
    KEY_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    federation_id: bytes
    epoch: int
    key_holder: str
    params: CkksParams
    public_context_sha256: bytes
    key_commitment: bytes
    recipients: _containers.RepeatedScalarFieldContainer[str]
    signature: bytes
    def __init__(self, federation_id: _Optional[bytes] = ..., epoch: _Optional[int] = ..., key_holder: _Optional[str] = ..., params: _Optional[_Union[CkksParams, _Mapping]] = ..., public_context_sha256: _Optional[bytes] = ..., key_commitment: _Optional[bytes] = ..., recipients: _Optional[_Iterable[str]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SealedKeyPackage(_message.Message):
    __slots__ = ("recipient", "epoch", "key_id", "sealed", "signature")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    epoch: int
    key_id: bytes
    sealed: bytes
    signature: bytes
    def __init__(self, recipient: _Optional[str] = ..., epoch: _Optional[int] = ..., key_id: _Optional[bytes] = ..., sealed: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CkksKeyring(_message.Message):
    __slots__ = ("manifest", "public_context", "packages")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    manifest: EpochManifest
    public_context: bytes
    packages: _containers.RepeatedCompositeFieldContainer[SealedKeyPackage]
    def __init__(self, manifest: _Optional[_Union[EpochManifest, _Mapping]] = ..., public_context: _Optional[bytes] = ..., packages: _Optional[_Iterable[_Union[SealedKeyPackage, _Mapping]]] = ...) -> None: ...

class KeyDelivery(_message.Message):
    __slots__ = ("manifest", "public_context", "package")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    manifest: EpochManifest
    public_context: bytes
    package: SealedKeyPackage
    def __init__(self, manifest: _Optional[_Union[EpochManifest, _Mapping]] = ..., public_context: _Optional[bytes] = ..., package: _Optional[_Union[SealedKeyPackage, _Mapping]] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("hospital", "digests", "signature", "tags")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    digests: _containers.RepeatedScalarFieldContainer[bytes]
    signature: bytes
    tags: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, hospital: _Optional[str] = ..., digests: _Optional[_Iterable[bytes]] = ..., signature: _Optional[bytes] = ..., tags: _Optional[_Iterable[int]] = ...) -> None: ...

class CkksKeyringRequest(_message.Message):
    __slots__ = ("session_id", "round", "epoch")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    epoch: int
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class CkksKeyringReply(_message.Message):
    __slots__ = ("round", "keyring")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEYRING_FIELD_NUMBER: _ClassVar[int]
    round: int
    keyring: CkksKeyring
    def __init__(self, round: _Optional[int] = ..., keyring: _Optional[_Union[CkksKeyring, _Mapping]] = ...) -> None: ...

class CkksUploadRequest(_message.Message):
    __slots__ = ("session_id", "round", "epoch", "key_id", "vector_length", "delivery")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    epoch: int
    key_id: bytes
    vector_length: int
    delivery: KeyDelivery
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., epoch: _Optional[int] = ..., key_id: _Optional[bytes] = ..., vector_length: _Optional[int] = ..., delivery: _Optional[_Union[KeyDelivery, _Mapping]] = ...) -> None: ...

class CkksUpload(_message.Message):
    __slots__ = ("round", "key_id", "header", "chunks")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    round: int
    key_id: bytes
    header: UploadHeader
    chunks: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunks: _Optional[_Iterable[bytes]] = ...) -> None: ...

class CkksConfirmRequest(_message.Message):
    __slots__ = ("session_id", "round", "key_id", "contributors")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    key_id: bytes
    contributors: _containers.RepeatedCompositeFieldContainer[UploadHeader]
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., contributors: _Optional[_Iterable[_Union[UploadHeader, _Mapping]]] = ...) -> None: ...

class CkksConfirmation(_message.Message):
    __slots__ = ("hospital", "round", "signature")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    signature: bytes
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CkksDecryptRequest(_message.Message):
    __slots__ = ("session_id", "round", "key_id", "contributors", "aggregate", "confirmations")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    key_id: bytes
    contributors: _containers.RepeatedCompositeFieldContainer[UploadHeader]
    aggregate: _containers.RepeatedScalarFieldContainer[bytes]
    confirmations: _containers.RepeatedCompositeFieldContainer[CkksConfirmation]
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., contributors: _Optional[_Iterable[_Union[UploadHeader, _Mapping]]] = ..., aggregate: _Optional[_Iterable[bytes]] = ..., confirmations: _Optional[_Iterable[_Union[CkksConfirmation, _Mapping]]] = ...) -> None: ...

class CkksDecryption(_message.Message):
    __slots__ = ("hospital", "round", "key_id", "total", "error_bound")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_BOUND_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    key_id: bytes
    total: Array
    error_bound: float
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., total: _Optional[_Union[Array, _Mapping]] = ..., error_bound: _Optional[float] = ...) -> None: ...

class ThCrsRequest(_message.Message):
    __slots__ = ("session_id", "round", "epoch", "members", "threshold")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    epoch: int
    members: _containers.RepeatedScalarFieldContainer[str]
    threshold: int
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., epoch: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., threshold: _Optional[int] = ...) -> None: ...

class ThNonce(_message.Message):
    __slots__ = ("hospital", "epoch", "nonce", "signature")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    epoch: int
    nonce: bytes
    signature: bytes
    def __init__(self, hospital: _Optional[str] = ..., epoch: _Optional[int] = ..., nonce: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ThKeygenRequest(_message.Message):
    __slots__ = ("session_id", "round", "epoch", "members", "threshold", "nonces")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NONCES_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    epoch: int
    members: _containers.RepeatedScalarFieldContainer[str]
    threshold: int
    nonces: _containers.RepeatedCompositeFieldContainer[ThNonce]
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., epoch: _Optional[int] = ..., members: _Optional[_Iterable[str]] = ..., threshold: _Optional[int] = ..., nonces: _Optional[_Iterable[_Union[ThNonce, _Mapping]]] = ...) -> None: ...

class ThContribution(_message.Message):
    __slots__ = ("hospital", "epoch", "public", "share_digests", "signature")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    SHARE_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    epoch: int
    public: bytes
    share_digests: _containers.RepeatedScalarFieldContainer[bytes]
    signature: bytes
    def __init__(self, hospital: _Optional[str] = ..., epoch: _Optional[int] = ..., public: _Optional[bytes] = ..., share_digests: _Optional[_Iterable[bytes]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ThKeygenReply(_message.Message):
    __slots__ = ("contribution", "sealed_shares")
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARES_FIELD_NUMBER: _ClassVar[int]
    contribution: ThContribution
    sealed_shares: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, contribution: _Optional[_Union[ThContribution, _Mapping]] = ..., sealed_shares: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ThKeysharesRequest(_message.Message):
    __slots__ = ("session_id", "round", "epoch", "contributions", "sealed_shares")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    SEALED_SHARES_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    epoch: int
    contributions: _containers.RepeatedCompositeFieldContainer[ThContribution]
    sealed_shares: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., epoch: _Optional[int] = ..., contributions: _Optional[_Iterable[_Union[ThContribution, _Mapping]]] = ..., sealed_shares: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ThKeyAck(_message.Message):
    __slots__ = ("hospital", "epoch", "key_id", "signature")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    epoch: int
    key_id: bytes
    signature: bytes
    def __init__(self, hospital: _Optional[str] = ..., epoch: _Optional[int] = ..., key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ThUploadRequest(_message.Message):
    __slots__ = ("session_id", "round", "key_id", "vector_length")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_LENGTH_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    key_id: bytes
    vector_length: int
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., vector_length: _Optional[int] = ...) -> None: ...

class ThUpload(_message.Message):
    __slots__ = ("hospital", "round", "key_id", "chunks", "signature")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    key_id: bytes
    chunks: _containers.RepeatedScalarFieldContainer[bytes]
    signature: bytes
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., chunks: _Optional[_Iterable[bytes]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ThDecryptRequest(_message.Message):
    __slots__ = ("session_id", "round", "key_id", "uploads", "decryptors")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_FIELD_NUMBER: _ClassVar[int]
    DECRYPTORS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    round: int
    key_id: bytes
    uploads: _containers.RepeatedCompositeFieldContainer[ThUpload]
    decryptors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[bytes] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., uploads: _Optional[_Iterable[_Union[ThUpload, _Mapping]]] = ..., decryptors: _Optional[_Iterable[str]] = ...) -> None: ...

class ThPartial(_message.Message):
    __slots__ = ("hospital", "round", "key_id", "summed", "partials")
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SUMMED_FIELD_NUMBER: _ClassVar[int]
    PARTIALS_FIELD_NUMBER: _ClassVar[int]
    hospital: str
    round: int
    key_id: bytes
    summed: _containers.RepeatedScalarFieldContainer[str]
    partials: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hospital: _Optional[str] = ..., round: _Optional[int] = ..., key_id: _Optional[bytes] = ..., summed: _Optional[_Iterable[str]] = ..., partials: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("train_request", "train_ack", "eval_request", "eval_report", "plain_upload_request", "plain_upload", "advertise_request", "advertise_keys", "share_keys_request", "share_keys_reply", "masked_input_request", "masked_input", "consistency_request", "consistency_signature", "unmask_request", "unmask_reply", "ckks_keyring_request", "ckks_keyring_reply", "ckks_upload_request", "ckks_upload", "ckks_decrypt_request", "ckks_decryption", "th_crs_request", "th_nonce", "th_keygen_request", "th_keygen_reply", "th_keyshares_request", "th_key_ack", "th_upload_request", "th_upload", "th_decrypt_request", "th_partial", "ckks_confirm_request", "ckks_confirmation")
    TRAIN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ACK_FIELD_NUMBER: _ClassVar[int]
    EVAL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    EVAL_REPORT_FIELD_NUMBER: _ClassVar[int]
    PLAIN_UPLOAD_REQUEST_FIELD_NUMBER: _ClassVar[int]
    PLAIN_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEYS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    SHARE_KEYS_REPLY_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MASKED_INPUT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    UNMASK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    UNMASK_REPLY_FIELD_NUMBER: _ClassVar[int]
    CKKS_KEYRING_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CKKS_KEYRING_REPLY_FIELD_NUMBER: _ClassVar[int]
    CKKS_UPLOAD_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CKKS_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    CKKS_DECRYPT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CKKS_DECRYPTION_FIELD_NUMBER: _ClassVar[int]
    TH_CRS_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TH_NONCE_FIELD_NUMBER: _ClassVar[int]
    TH_KEYGEN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TH_KEYGEN_REPLY_FIELD_NUMBER: _ClassVar[int]
    TH_KEYSHARES_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TH_KEY_ACK_FIELD_NUMBER: _ClassVar[int]
    TH_UPLOAD_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TH_UPLOAD_FIELD_NUMBER: _ClassVar[int]
    TH_DECRYPT_REQUEST_FIELD_NUMBER: _ClassVar[int]
    TH_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    CKKS_CONFIRM_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CKKS_CONFIRMATION_FIELD_NUMBER: _ClassVar[int]
    train_request: TrainRequest
    train_ack: TrainAck
    eval_request: EvalRequest
    eval_report: EvalReport
    plain_upload_request: PlainUploadRequest
    plain_upload: PlainUpload
    advertise_request: AdvertiseRequest
    advertise_keys: AdvertiseKeys
    share_keys_request: ShareKeysRequest
    share_keys_reply: ShareKeysReply
    masked_input_request: MaskedInputRequest
    masked_input: MaskedInput
    consistency_request: ConsistencyRequest
    consistency_signature: ConsistencySignature
    unmask_request: UnmaskRequest
    unmask_reply: UnmaskReply
    ckks_keyring_request: CkksKeyringRequest
    ckks_keyring_reply: CkksKeyringReply
    ckks_upload_request: CkksUploadRequest
    ckks_upload: CkksUpload
    ckks_decrypt_request: CkksDecryptRequest
    ckks_decryption: CkksDecryption
    th_crs_request: ThCrsRequest
    th_nonce: ThNonce
    th_keygen_request: ThKeygenRequest
    th_keygen_reply: ThKeygenReply
    th_keyshares_request: ThKeysharesRequest
    th_key_ack: ThKeyAck
    th_upload_request: ThUploadRequest
    th_upload: ThUpload
    th_decrypt_request: ThDecryptRequest
    th_partial: ThPartial
    ckks_confirm_request: CkksConfirmRequest
    ckks_confirmation: CkksConfirmation
    def __init__(self, train_request: _Optional[_Union[TrainRequest, _Mapping]] = ..., train_ack: _Optional[_Union[TrainAck, _Mapping]] = ..., eval_request: _Optional[_Union[EvalRequest, _Mapping]] = ..., eval_report: _Optional[_Union[EvalReport, _Mapping]] = ..., plain_upload_request: _Optional[_Union[PlainUploadRequest, _Mapping]] = ..., plain_upload: _Optional[_Union[PlainUpload, _Mapping]] = ..., advertise_request: _Optional[_Union[AdvertiseRequest, _Mapping]] = ..., advertise_keys: _Optional[_Union[AdvertiseKeys, _Mapping]] = ..., share_keys_request: _Optional[_Union[ShareKeysRequest, _Mapping]] = ..., share_keys_reply: _Optional[_Union[ShareKeysReply, _Mapping]] = ..., masked_input_request: _Optional[_Union[MaskedInputRequest, _Mapping]] = ..., masked_input: _Optional[_Union[MaskedInput, _Mapping]] = ..., consistency_request: _Optional[_Union[ConsistencyRequest, _Mapping]] = ..., consistency_signature: _Optional[_Union[ConsistencySignature, _Mapping]] = ..., unmask_request: _Optional[_Union[UnmaskRequest, _Mapping]] = ..., unmask_reply: _Optional[_Union[UnmaskReply, _Mapping]] = ..., ckks_keyring_request: _Optional[_Union[CkksKeyringRequest, _Mapping]] = ..., ckks_keyring_reply: _Optional[_Union[CkksKeyringReply, _Mapping]] = ..., ckks_upload_request: _Optional[_Union[CkksUploadRequest, _Mapping]] = ..., ckks_upload: _Optional[_Union[CkksUpload, _Mapping]] = ..., ckks_decrypt_request: _Optional[_Union[CkksDecryptRequest, _Mapping]] = ..., ckks_decryption: _Optional[_Union[CkksDecryption, _Mapping]] = ..., th_crs_request: _Optional[_Union[ThCrsRequest, _Mapping]] = ..., th_nonce: _Optional[_Union[ThNonce, _Mapping]] = ..., th_keygen_request: _Optional[_Union[ThKeygenRequest, _Mapping]] = ..., th_keygen_reply: _Optional[_Union[ThKeygenReply, _Mapping]] = ..., th_keyshares_request: _Optional[_Union[ThKeysharesRequest, _Mapping]] = ..., th_key_ack: _Optional[_Union[ThKeyAck, _Mapping]] = ..., th_upload_request: _Optional[_Union[ThUploadRequest, _Mapping]] = ..., th_upload: _Optional[_Union[ThUpload, _Mapping]] = ..., th_decrypt_request: _Optional[_Union[ThDecryptRequest, _Mapping]] = ..., th_partial: _Optional[_Union[ThPartial, _Mapping]] = ..., ckks_confirm_request: _Optional[_Union[CkksConfirmRequest, _Mapping]] = ..., ckks_confirmation: _Optional[_Union[CkksConfirmation, _Mapping]] = ...) -> None: ...
