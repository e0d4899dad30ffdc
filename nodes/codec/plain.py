"""Wire specs of the ``none`` protection's messages (:mod:`fedrx.protocol.protection`): the
upload request and the plain float64 update."""

from __future__ import annotations

from fedrx.nodes.codec.fields import ROUND, Array, message
from fedrx.proto.gen.fedrx.v1 import fedrx_pb2 as pb
from fedrx.protocol.protection import PlainUpload, PlainUploadRequest

message(PlainUploadRequest, pb.PlainUploadRequest, round=ROUND)
message(PlainUpload, pb.PlainUpload, vector=Array("<f8"))

ENVELOPE_FIELDS = {PlainUploadRequest: "plain_upload_request", PlainUpload: "plain_upload"}
