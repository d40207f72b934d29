"""The raftlog client library (blocking ``Client`` and trio ``AsyncClient``).

It knows only the wire protocol (``raftlog.client.protocol``); it never
imports ``raftlog.raft``, ``raftlog.log`` or ``raftlog.server``.

    from raftlog.client import Client
    with Client("127.0.0.1:7101,127.0.0.1:7102") as client:
        md = client.produce("orders", b"hello", key=b"customer-1")
        records = client.fetch("orders", md.partition, md.offset).records

The names below are imported lazily, so ``import raftlog.client.protocol``
(what the server does) does not load the whole client.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AsyncClient": "aio",
    "Client": "sync",
    "Producer": "producer",
    "SyncProducer": "producer",
    "Delivery": "producer",
    "Consumer": "consumer",
    "SyncConsumer": "consumer",
    "RecordMetadata": "models",
    "BatchMetadata": "models",
    "FetchResult": "models",
    "Offsets": "models",
    "OffsetAndTimestamp": "models",
    "DeletedGroup": "models",
    "Record": "protocol",
    "RaftlogError": "errors",
    "ErrorCode": "errors",
    "TLSConfig": "tls",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raftlog.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
