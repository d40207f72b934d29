"""Workloads: what the client processes do, every operation recorded.

``log``      workers send unique integers to the topic's partitions with the
             idempotent producer (the client retries with the same sequence),
             fetch by offset and ask for the linearizable end offset.
``offsets``  half the workers produce; one consumer per partition (group
             ``jepsen``) polls from its position, commits after each poll, and
             now and then "restarts": forgets its position and resumes from the
             group's committed offset.
``groups``   producers as in ``offsets``; C group-managed consumers (group
             ``jepsen-g``) that the coordinator assigns partitions to, with
             rebalances, restarts and fail-overs (jepsen/groups_workload.py).
``producer`` half the workers send bursts through one batching ``Producer``
             each (batches in flight, retried, split; compressed, keyed or
             without idempotence by profile); the rest run ``log``'s mix
             (jepsen/producer_workload.py).
``compact``  the topic is compacted (``cleanup_policy = "compact"``): workers send
             keyed records and tombstones and fetch, also from offset 0, while
             the leaders sweep (jepsen/compact_workload.py, checked by
             jepsen/checker_compact.py).

All end with a final phase: after the faults are healed, every partition is
drained from offset 0 through its leader. Per-node drains over the network
need reads served by followers, which the protocol only allows in the
deliberately unsafe ``unsafe_follower_reads`` mode: with it, each node is
drained on its own too. Every node's copy is compared in any mode after the
nodes stopped, from their data directories (jepsen/replicas.py).

Values in the history are those documented in ``checker_log``.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.connection import Connection
from raftlog.client.errors import OutOfRangeError, RaftlogError
from raftlog.client.protocol import Record, decode_batch
from raftlog.client.tls import TLSConfig, client_context

from .history import OpType, ProcessIds, Recorder, classify_error, error_name

log = logging.getLogger(__name__)

TOPIC = "jepsen"
GROUP = "jepsen"
WORKLOADS = ("log", "offsets", "groups", "producer", "compact")


@dataclass
class WorkloadConfig:
    name: str = "log"
    partitions: int = 3
    concurrency: int = 10
    rate_per_worker: float = 20.0  # ops/s per worker (keeps 2 cores usable for the nodes)
    request_timeout: float = 3.0
    fetch_max_records: int = 20
    consumers: int = 3  # groups: group-managed consumers
    session_timeout: float = 2.0  # groups: short, so faults expire members
    static_members: bool = False  # groups: each consumer worker keeps one instance id
    rebalance: str = "eager"  # groups: eager, cooperative, or mixed (every other worker)
    # Fraction of fetches and polls sent with consistency="serializable" (any
    # replica's copy): checked like every read except for recency.
    serializable_reads: float = 0.0


def plain_row(r: Record) -> list[Any]:
    """A read record as the log checker's histories hold it: [offset, value]."""
    return [r.offset, decode_value(r.value)]


def decode_value(value: bytes | None) -> Any:
    """A record value as the history holds it: our values are decimal integers
    (None: a tombstone)."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value.decode(errors="replace")


@dataclass
class Workload:
    config: WorkloadConfig
    bootstrap: Sequence[str]
    recorder: Recorder
    rng: random.Random = field(default_factory=random.Random)
    tls: TLSConfig | None = None  # the run's --tls: every client trusts its CA
    _values: itertools.count = field(default_factory=lambda: itertools.count(1))
    _known_end: dict[int, int] = field(default_factory=dict)
    # How reads enter the history (the compact workload also records keys and ids).
    row_of: Callable[[Record], list[Any]] = plain_row

    def __post_init__(self) -> None:
        self.procs = ProcessIds(self.config.concurrency)
        self.groups: Any = None  # the groups workload's GroupConsumers, once running
        self.producers: Any = None  # the producer workload's ProducerWorkers, once running
        if self.config.name == "compact":
            from .compact_workload import compact_row

            self.row_of = compact_row

    # ------------------------------------------------------------ one op

    async def _op(self, worker: int, f: str, value: dict[str, Any], coro_fn) -> Any:
        """Record invoke, run, record the completion; an info retires the process."""
        process = self.procs.current(worker)
        inv = self.recorder.invoke(process, f, value)
        try:
            result, out = await coro_fn()
        except Exception as exc:
            if not isinstance(exc, RaftlogError | OSError):
                log.warning("event=unexpected_client_error f=%s error=%r", f, exc)
            type_ = classify_error(f, exc)
            self.recorder.complete(inv, type_, value, error=error_name(exc) + f" {exc}"[:200])
            if type_ is OpType.INFO:
                self.procs.retire(worker)
            return None
        except BaseException:
            # Cancelled (end of the run) or a harness bug: the outcome is unknown.
            self.recorder.complete(inv, OpType.INFO, value, error="harness stopped")
            self.procs.retire(worker)
            raise
        self.recorder.complete(inv, OpType.OK, out)
        return result

    async def send(self, worker: int, client: AsyncClient, key: int) -> None:
        v = next(self._values)

        async def go():
            meta = await client.produce(TOPIC, str(v).encode(), partition=key)
            self._known_end[key] = max(self._known_end.get(key, 0), meta.offset + 1)
            return meta, {"key": key, "value": v, "offset": meta.offset}

        await self._op(worker, "send", {"key": key, "value": v}, go)

    async def fetch(self, worker: int, client: AsyncClient, key: int, f: str = "fetch",
                    offset: int | None = None, extra: dict[str, Any] | None = None,
                    max_wait: float = 0.0) -> Any:
        if offset is None:
            end = self._known_end.get(key, 0)
            offset = self.rng.randint(max(0, end - 2 * self.config.fetch_max_records), end)
        inv = {"key": key, "offset": offset, **(extra or {})}
        consistency = "linearizable"
        if self.rng.random() < self.config.serializable_reads:
            consistency = "serializable"
            inv["serializable"] = True

        async def go():
            try:
                res = await client.fetch(TOPIC, key, offset,
                                         max_records=self.config.fetch_max_records,
                                         max_wait=max_wait, consistency=consistency)
            except OutOfRangeError as exc:
                end = exc.details.get("end_offset")
                if not isinstance(end, int):
                    raise
                # The server says the log ends before `offset`: an observation
                # of the end offset like any other (stale if we saw more before).
                return None, {**inv, "records": [], "end": end, "out_of_range": True}
            self._known_end[key] = max(self._known_end.get(key, 0), res.end_offset)
            out = {**inv, "records": [self.row_of(r) for r in res.records]}
            if max_wait == 0:
                # One ReadIndex round serves both: the end is linearizable with the
                # records (serializable: the end of the same replica's copy).
                out["end"] = res.end_offset
            return res, out

        return await self._op(worker, f, inv, go)

    async def list_offsets(self, worker: int, client: AsyncClient, key: int) -> None:
        async def go():
            res = await client.list_offsets(TOPIC, key)
            self._known_end[key] = max(self._known_end.get(key, 0), res.end_offset)
            return res, {"key": key, "start": res.start_offset, "end": res.end_offset}

        await self._op(worker, "list_offsets", {"key": key}, go)

    # ------------------------------------------------------------ workers

    async def _pace(self) -> None:
        await trio.sleep(self.rng.expovariate(self.config.rate_per_worker))

    async def log_worker(self, worker: int, stop: trio.Event) -> None:
        async with AsyncClient(self.bootstrap, client_id=f"jepsen-{worker}",
                               request_timeout=self.config.request_timeout,
                               tls=self.tls) as client:
            while not stop.is_set():
                key = self.rng.randrange(self.config.partitions)
                r = self.rng.random()
                if r < 0.55:
                    await self.send(worker, client, key)
                elif r < 0.85:
                    await self.fetch(worker, client, key)
                else:
                    await self.list_offsets(worker, client, key)
                await self._pace()

    async def consumer_worker(self, worker: int, key: int, stop: trio.Event) -> None:
        """One consumer session at a time on partition ``key``; restarts resume
        from the group's committed offset."""
        async with AsyncClient(self.bootstrap, client_id=f"jepsen-c{worker}",
                               request_timeout=self.config.request_timeout,
                               tls=self.tls) as client:
            session = 0
            position: int | None = None
            while not stop.is_set():
                consumer = f"c{worker}.{session}"
                if position is None:
                    committed = await self._op(
                        worker, "fetch_committed", {"group": GROUP, "key": key},
                        lambda: self._committed(client, key))
                    if committed is None:
                        await self._pace()
                        continue
                    position = committed[0] if committed[0] is not None else 0
                    self.recorder.complete(
                        self.recorder.invoke(self.procs.current(worker), "assign",
                                             {"consumer": consumer, "key": key,
                                              "offset": position}),
                        OpType.OK)
                res = await self.fetch(worker, client, key, "poll", position,
                                       {"consumer": consumer}, max_wait=0.1)
                if res is not None and res.records:
                    position = res.records[-1].offset + 1
                    await self._op(
                        worker, "commit", {"group": GROUP, "key": key, "offset": position},
                        lambda p=position: self._commit(client, key, p))
                if self.rng.random() < 0.05:
                    session += 1
                    position = None  # a restart: resume from the committed offset
                await self._pace()

    async def _committed(self, client: AsyncClient, key: int):
        off = await client.committed(GROUP, TOPIC, key)
        return (off,), {"group": GROUP, "key": key, "offset": off}

    async def _commit(self, client: AsyncClient, key: int, offset: int):
        await client.commit_offset(GROUP, TOPIC, key, offset)
        return True, {"group": GROUP, "key": key, "offset": offset}

    async def run(self, stop: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            c = self.config.concurrency
            if self.config.name == "log":
                for w in range(c):
                    nursery.start_soon(self.log_worker, w, stop)
            elif self.config.name == "offsets":
                consumers = min(self.config.partitions, max(1, c // 2))
                for w in range(c - consumers):
                    nursery.start_soon(self.log_worker, w, stop)
                for i in range(consumers):
                    w = c - consumers + i
                    nursery.start_soon(self.consumer_worker, w, i, stop)
            elif self.config.name == "groups":
                # Imported here: groups_workload builds on this module.
                from .groups_workload import GroupConsumers, GroupsConfig

                consumers = min(self.config.consumers, max(1, c - 1))
                self.groups = GroupConsumers(self, GroupsConfig(
                    consumers=consumers, session_timeout=self.config.session_timeout,
                    static=self.config.static_members, rebalance=self.config.rebalance))
                for w in range(c - consumers):
                    nursery.start_soon(self.log_worker, w, stop)
                for i in range(consumers):
                    nursery.start_soon(self.groups.worker, c - consumers + i, i, stop)
            elif self.config.name == "producer":
                from .producer_workload import ProducerWorkers, producer_workers

                self.producers = ProducerWorkers(self)
                n = producer_workers(c)
                for w in range(n):
                    nursery.start_soon(self.producers.worker, w, stop)
                for w in range(n, c):
                    nursery.start_soon(self.log_worker, w, stop)
            elif self.config.name == "compact":
                from .compact_workload import CompactWorkers

                workers = CompactWorkers(self)
                for w in range(c):
                    nursery.start_soon(workers.worker, w, stop)
            else:
                raise ValueError(f"unknown workload {self.config.name!r}")

    # ------------------------------------------------------------ final reads

    async def drain(self, deadline: float = 60.0) -> list[str]:
        """Read every partition from offset 0 to its end, through the leader.

        Retries (bounded by ``deadline``) until one full pass succeeds; each
        attempt is recorded, failures as ``fail`` (reads have no effect).
        """
        notes: list[str] = []
        async with AsyncClient(self.bootstrap, client_id="jepsen-drain",
                               request_timeout=self.config.request_timeout,
                               tls=self.tls) as client:
            for key in range(self.config.partitions):
                with trio.move_on_after(deadline) as scope:
                    while True:
                        inv = self.recorder.invoke(f"drain-{key}", "drain",
                                                   {"key": key, "offset": 0})
                        try:
                            records, end = await self._read_all(client, key)
                        except RaftlogError as exc:
                            self.recorder.complete(inv, OpType.FAIL, error=error_name(exc))
                            await trio.sleep(0.2)
                            continue
                        self.recorder.complete(
                            inv, OpType.OK,
                            {"key": key, "offset": 0, "records": records, "end": end})
                        break
                if scope.cancelled_caught:
                    notes.append(f"partition {key}: drain did not finish within {deadline}s")
        return notes

    async def _read_all(self, client: AsyncClient, key: int) -> tuple[list[list[Any]], int]:
        records: list[list[Any]] = []
        offset = 0
        while True:
            res = await client.fetch(TOPIC, key, offset, max_records=1000)
            for r in res.records:
                records.append(self.row_of(r))
            nxt = res.next_offset(offset)
            if nxt >= res.end_offset or nxt == offset:
                # Done, or no progress although the end is further: return what
                # we have and let the checkers judge it (unseen-after-drain).
                return records, res.end_offset
            offset = nxt

    async def drain_nodes(self, addresses: dict[str, str], deadline: float = 30.0) -> list[str]:
        """Each node's own copy, read from that node alone (needs follower reads)."""
        notes: list[str] = []
        async with trio.open_nursery() as nursery:
            for nid, address in sorted(addresses.items()):
                try:
                    with trio.fail_after(5):
                        conn = await Connection.open(nursery, address, client_id=f"drain-{nid}",
                                                     ssl_context=client_context(self.tls))
                except (OSError, RaftlogError, trio.TooSlowError) as exc:
                    notes.append(f"node {nid}: cannot connect for a per-node drain: {exc}")
                    continue
                for key in range(self.config.partitions):
                    inv = self.recorder.invoke(f"drain-{nid}-{key}", "drain",
                                               {"key": key, "offset": 0, "node": nid}, node=nid)
                    try:
                        with trio.fail_after(deadline):
                            records, end = await self._node_read_all(conn, key)
                    except (RaftlogError, trio.TooSlowError) as exc:
                        self.recorder.complete(inv, OpType.FAIL, error=error_name(exc))
                        notes.append(f"node {nid} partition {key}: per-node drain failed: {exc}")
                        continue
                    self.recorder.complete(inv, OpType.OK, {"key": key, "offset": 0,
                                                            "node": nid, "records": records,
                                                            "end": end})
            nursery.cancel_scope.cancel()
        return notes

    async def _node_read_all(self, conn: Connection, key: int):
        records: list[list[Any]] = []
        offset = 0
        while True:
            reply = await conn.request("fetch", {"topic": TOPIC, "partition": key,
                                                 "offset": offset, "max_records": 1000})
            got = []
            for base, ts, count, blob in reply.get("batches") or []:
                if base + count <= offset:
                    continue
                got.extend(decode_batch(base, ts, blob, offset))
            for r in got:
                records.append(self.row_of(r))
            end = int(reply["end_offset"])
            offset = got[-1].offset + 1 if got else offset
            if offset >= end or not got:
                return records, end
