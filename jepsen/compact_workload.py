"""The ``compact`` workload: keyed records and tombstones in a compacted topic.

The run's topic has ``cleanup_policy = "compact"`` and a short
``delete_retention_ms``, and the leaders sweep every few hundred milliseconds
(jepsen/runner.py sets that up), so records are removed while workers send,
fetch and the nemesis strikes. Each worker:

- sends a record to a random partition under one of a few keys. Two kinds of
  keys, so that the checker (jepsen/checker_compact.py) has a strict case and
  a tombstone case:
  - ``k0``..``k3`` only ever get values: a record of theirs may only go once a
    later record of the same key exists, and a key's latest record never goes;
  - ``d0``, ``d1`` also get tombstones (a None value), which may go once older
    than ``delete_retention_ms``.
- fetches, from offset 0 now and then (reads through removed runs), otherwise
  near the end it knows of.

Every record carries its unique id in the header ``id`` (a tombstone has no
value to carry it), and the value of a non-tombstone is that id too. Reads
enter the history as ``[offset, id, key, tombstone]`` (``compact_row``); the
shapes are documented in jepsen/checker_compact.py.
"""

from __future__ import annotations

from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.protocol import Record

from .workload import TOPIC, Workload, decode_value

VALUE_KEYS = ("k0", "k1", "k2", "k3")  # never deleted
DELETED_KEYS = ("d0", "d1")  # values and tombstones
TOMBSTONE_CHANCE = 0.3  # of the sends to a DELETED_KEYS key
SEND_CHANCE = 0.6  # the rest of the ops are fetches
FROM_ZERO_CHANCE = 0.3  # of the fetches


def topic_config(delete_retention_ms: int) -> dict[str, Any]:
    """The run's topic config: compacted, tombstones kept ``delete_retention_ms``."""
    return {"cleanup_policy": "compact", "delete_retention_ms": delete_retention_ms}


def compact_row(r: Record) -> list[Any]:
    """[offset, id, key, tombstone]: the id from the ``id`` header (the value when a
    record has no such header: the checker then finds no send of it)."""
    headers = r.headers or {}
    raw = headers.get("id")
    ident = decode_value(raw) if raw is not None else decode_value(r.value)
    key = r.key.decode(errors="replace") if r.key is not None else None
    return [r.offset, ident, key, r.value is None]


class CompactWorkers:
    """The compact workload's workers, recording into ``workload``'s history."""

    def __init__(self, workload: Workload) -> None:
        self.wl = workload

    async def send(self, worker: int, client: AsyncClient, partition: int) -> None:
        wl = self.wl
        ident = next(wl._values)
        keys = wl.rng.choice((VALUE_KEYS, DELETED_KEYS))
        k = wl.rng.choice(keys)
        tombstone = keys is DELETED_KEYS and wl.rng.random() < TOMBSTONE_CHANCE
        inv = {"key": partition, "value": ident, "k": k, "tombstone": tombstone}

        async def go():
            meta = await client.produce(TOPIC, None if tombstone else str(ident).encode(),
                                        key=k, partition=partition,
                                        headers={"id": str(ident).encode()})
            wl._known_end[partition] = max(wl._known_end.get(partition, 0), meta.offset + 1)
            return meta, {**inv, "offset": meta.offset}

        await wl._op(worker, "send", inv, go)

    async def worker(self, worker: int, stop: trio.Event) -> None:
        wl = self.wl
        async with AsyncClient(wl.bootstrap, client_id=f"jepsen-{worker}",
                               request_timeout=wl.config.request_timeout,
                               tls=wl.tls) as client:
            while not stop.is_set():
                partition = wl.rng.randrange(wl.config.partitions)
                if wl.rng.random() < SEND_CHANCE:
                    await self.send(worker, client, partition)
                else:
                    offset = 0 if wl.rng.random() < FROM_ZERO_CHANCE else None
                    await wl.fetch(worker, client, partition, offset=offset)
                await wl._pace()
