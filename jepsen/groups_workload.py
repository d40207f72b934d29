"""The ``groups`` workload's consumers: group-managed Consumers under faults.

Each consumer worker runs one ``Consumer`` incarnation at a time in group
``jepsen-g`` (no ``partitions``: the coordinator assigns them). It polls,
records every delivered (partition, offset, value) with the member id and
generation it held, commits what it just received, and now and then
"restarts": ``close()`` (commits and leaves, so the others rebalance at once)
and a new Consumer joins. With ``static`` (``--static-members``) a worker's
consumers share one ``group_instance_id``: ``close()`` commits and stays, and
the next incarnation takes its place and partitions without a rebalance.
With ``rebalance`` (``--rebalance cooperative|mixed``) consumers keep the
partitions that stay with them through a rebalance (KIP-429).
A short session timeout (2 s) makes killed, paused and partitioned
coordinators expire members, so rebalances and
coordinator fail-overs happen during the run. At the end every consumer
closes; the runner drains and then reads the final committed offsets
(``final_committed``). The op shapes are documented in checker_groups.

Why a ``stint`` number besides the generation: generations count from 0 again
on a new coordinator while a member keeps its id, so (member, generation) may
repeat. The worker bumps ``stint`` whenever the (member, generation) it
observes after a poll changes; a fail-over always shows in between as at
least one poll without a generation (members give their partitions up for a
session timeout before a new coordinator forms a generation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.errors import RaftlogError

from .history import Op, OpType, classify_error, error_name
from .workload import TOPIC, Workload, decode_value

log = logging.getLogger(__name__)

GROUP = "jepsen-g"
CLOSE_DEADLINE_S = 15.0  # commit + leave; each request is bounded by its own timeout


@dataclass
class GroupsConfig:
    consumers: int = 3
    session_timeout: float = 2.0
    # Bounds a join (client/group_member.py: rebalance + 2 sessions + a request
    # timeout) so a consumer stuck behind a fault gives up and rejoins afresh.
    rebalance_timeout: float = 6.0
    max_wait: float = 0.3
    restart_chance: float = 0.01  # per poll: ~one restart per consumer per 30 s
    # Each worker's consumers share the instance id "jepsen-g<worker>": a restart
    # (whose close() then does not leave) takes the old member's place back.
    static: bool = False
    # The consumers' rebalance protocol: "eager", "cooperative", or "mixed"
    # (odd-numbered workers cooperative): client/consumer.py.
    rebalance: str = "eager"

    def protocol(self, index: int) -> str:
        if self.rebalance == "mixed":
            return "cooperative" if index % 2 else "eager"
        return self.rebalance


def _is_client_error(exc: BaseException) -> bool:
    """A RaftlogError or OSError, possibly inside an exception group (the consumer
    fetches its partitions in a nursery: strict exception groups wrap them)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_client_error(e) for e in exc.exceptions)
    return isinstance(exc, RaftlogError | OSError)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class GroupConsumers:
    """The consumer workers of one ``groups`` run, recording into the workload's history."""

    def __init__(self, workload: Workload, config: GroupsConfig) -> None:
        self.wl = workload
        self.config = config

    # ------------------------------------------------------------ recording

    def _invoke(self, worker: int, f: str, value: dict[str, Any]) -> Op:
        return self.wl.recorder.invoke(self.wl.procs.current(worker), f, value)

    def _failed(self, worker: int, inv: Op, exc: BaseException, read: bool) -> None:
        """Record a failure: a read (poll) changed nothing, a write may have landed."""
        if not _is_client_error(exc):
            log.warning("event=unexpected_client_error f=%s error=%r", inv.f, exc)
        leaf = _leaf(exc)
        type_ = OpType.FAIL if read else classify_error(inv.f, leaf)
        self.wl.recorder.complete(inv, type_, inv.value,
                                  error=(error_name(leaf) + f" {leaf}")[:200])
        if type_ is OpType.INFO:
            self.wl.procs.retire(worker)

    # ------------------------------------------------------------ one consumer

    async def worker(self, worker: int, index: int, stop: trio.Event) -> None:
        async with AsyncClient(self.wl.bootstrap, client_id=f"jepsen-g{index}",
                               request_timeout=self.wl.config.request_timeout,
                               tls=self.wl.tls) as client:
            incarnation = 0
            while not stop.is_set():
                name = f"g{index}.{incarnation}"
                incarnation += 1
                consumer = Consumer(client, GROUP, TOPIC,
                                    session_timeout=self.config.session_timeout,
                                    rebalance_timeout=self.config.rebalance_timeout,
                                    max_wait=self.config.max_wait,
                                    max_records=self.wl.config.fetch_max_records,
                                    group_instance_id=(f"jepsen-g{index}"
                                                       if self.config.static else None),
                                    rebalance=self.config.protocol(index))
                if not await self._join(worker, consumer, name):
                    await self.wl._pace()
                    continue
                try:
                    await self._consume(worker, consumer, name, stop)
                finally:
                    # Also when the run is cancelled: close() commits and leaves.
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_DEADLINE_S):
                        await self._close(worker, consumer, name)

    async def _join(self, worker: int, consumer: Consumer, name: str) -> bool:
        inv = self._invoke(worker, "gjoin", {"consumer": name})
        try:
            await consumer.start()
        except Exception as exc:
            # A half-done join: the member expires after its session timeout.
            self._failed(worker, inv, exc, read=False)
            return False
        self.wl.recorder.complete(inv, OpType.OK, {
            "consumer": name, "member": consumer.member_id,
            "generation": consumer.generation, "assigned": consumer.partitions})
        return True

    async def _consume(self, worker: int, consumer: Consumer, name: str,
                       stop: trio.Event) -> None:
        stint = 0
        seen: tuple[Any, Any] | None = None
        while not stop.is_set() and self.wl.rng.random() >= self.config.restart_chance:
            inv = self._invoke(worker, "gpoll", {"consumer": name})
            try:
                got = await consumer.poll(self.config.max_wait)
            except Exception as exc:
                self._failed(worker, inv, exc, read=True)
                await self.wl._pace()
                continue
            # No checkpoint between poll() returning and here: the generation
            # read now is the one the records were fetched under.
            observed = (consumer.member_id, consumer.generation)
            if seen is not None and observed != seen:
                stint += 1
            seen = observed
            ident = {"consumer": name, "member": observed[0], "generation": observed[1],
                     "stint": stint}
            self.wl.recorder.complete(inv, OpType.OK, {
                **ident, "assigned": consumer.partitions,
                "records": [[p, r.offset, decode_value(r.value)] for p, r in got]})
            if got:
                offsets = {p: r.offset + 1 for p, r in got}  # the last of each partition
                await self._commit(worker, consumer, ident, offsets)
            await self.wl._pace()

    async def _commit(self, worker: int, consumer: Consumer, ident: dict[str, Any],
                      offsets: dict[int, int]) -> None:
        value = {**ident, "offsets": [[p, o] for p, o in sorted(offsets.items())]}
        inv = self._invoke(worker, "gcommit", value)
        try:
            await consumer.commit(offsets)
        except Exception as exc:
            self._failed(worker, inv, exc, read=False)
            return
        self.wl.recorder.complete(inv, OpType.OK, value)

    async def _close(self, worker: int, consumer: Consumer, name: str) -> None:
        inv = self._invoke(worker, "gclose", {"consumer": name, "member": consumer.member_id})
        try:
            await consumer.close()
        except Exception as exc:
            self._failed(worker, inv, exc, read=False)
            return
        self.wl.recorder.complete(inv, OpType.OK, inv.value)

    # ------------------------------------------------------------ the end

    async def final_committed(self, deadline: float = 30.0) -> list[str]:
        """The group's committed offset of every partition, once every consumer closed
        (retried within ``deadline``; reads, so failures are ``fail``)."""
        notes: list[str] = []
        async with AsyncClient(self.wl.bootstrap, client_id="jepsen-committed",
                               request_timeout=self.wl.config.request_timeout,
                               tls=self.wl.tls) as client:
            for key in range(self.wl.config.partitions):
                with trio.move_on_after(deadline) as scope:
                    while True:
                        inv = self.wl.recorder.invoke(f"committed-{key}", "gcommitted",
                                                      {"group": GROUP, "key": key})
                        try:
                            off = await client.committed(GROUP, TOPIC, key)
                        except RaftlogError as exc:
                            self.wl.recorder.complete(inv, OpType.FAIL, error=error_name(exc))
                            await trio.sleep(0.2)
                            continue
                        self.wl.recorder.complete(inv, OpType.OK,
                                                  {"group": GROUP, "key": key, "offset": off})
                        break
                if scope.cancelled_caught:
                    notes.append(f"partition {key}: committed offset of group {GROUP} not "
                                 f"read within {deadline}s")
        return notes
