"""Runs moto's server (`moto_server`, same arguments) with three adjustments for the tests.

Started by scripts/aws-servers.sh with the moto venv's Python. Written for the pinned moto 5.2.5.

- LFUSYS_MOTO_SERIALIZE=1 handles one request at a time. moto applies concurrent requests to
  the same item without isolation: two conditional updates of one DynamoDB item can both pass
  their conditions and one of them is lost, and copying an item while another thread changes it
  fails with a 500 ("dictionary changed size during iteration"). DynamoDB itself applies the
  writes of one item one after the other; so does moto with this. (Not for S3: it would hold
  the lock while a part's body arrives.)
- moto lists its ~150 service packages on disk for every request, under its dispatch lock, to
  find the backend: listed once here.
- No access log line per request (10,000-chunk uploads make hundreds of thousands).
- LFUSYS_MOTO_FAST_JSON=1 makes DynamoDB's item operations cheaper: their answer is
  `json.dumps` of the result moto computed (it is in DynamoDB's JSON form already) instead of
  moto's generic, model-driven serializer, which takes a third of the time of such a request
  (errors, and every other operation, still go through that serializer); and an update
  expression is parsed once per distinct text rather than twice per request (moto's validator
  works on a copy of the parsed expression).
"""

import base64
import functools
import json
import logging
import os
import sys
import threading

import moto.backends as backends

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES

if os.environ.get("LFUSYS_MOTO_SERIALIZE") == "1":
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    _dispatch = DomainDispatcherApplication.__call__
    _one_at_a_time = threading.Lock()

    def _serialized(self, environ, start_response):
        with _one_at_a_time:
            return _dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = _serialized

if os.environ.get("LFUSYS_MOTO_FAST_JSON") == "1":
    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoResult

    _ITEM_OPERATIONS = {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
    _serialize = BaseResponse.serialized

    def _plain(value):
        # As moto's serializer: binary attribute values travel base64-encoded.
        if isinstance(value, (bytes, bytearray)):
            return base64.b64encode(value).decode()
        raise TypeError(f"cannot encode {type(value).__name__}")

    def _fast_serialized(self, action_result):
        if (
            type(action_result) is DynamoResult
            and not isinstance(action_result.result, Exception)
            and self._get_action() in _ITEM_OPERATIONS
        ):
            try:
                body = json.dumps(action_result.result, default=_plain)
            except TypeError:
                return _serialize(self, action_result)
            headers = {"Content-Type": "application/x-amz-json-1.0"}
            headers.update(self.response_headers)
            return 200, headers, body
        return _serialize(self, action_result)

    BaseResponse.serialized = _fast_serialized

    from moto.dynamodb.parsing.expressions import UpdateExpressionParser

    UpdateExpressionParser.make = classmethod(
        functools.lru_cache(maxsize=512)(UpdateExpressionParser.make.__func__)
    )

logging.getLogger("werkzeug").setLevel(logging.WARNING)

from moto.server import main  # noqa: E402  (after the adjustments above)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
