"""An in-memory fake raftlog cluster speaking the client protocol, for client tests.

Several ``FakeNode``s (trio TCP listeners on 127.0.0.1, free ports) share one
``FakeCluster`` state. One node leads every partition and the metadata group
(``cluster.leader``); the others answer NOT_LEADER with its address, so the
client's redirects are exercised. Fault hooks let tests inject:

* ``errors[op]``: error replies to return (once each) before serving ``op``;
* ``drop_after_apply``: produces that are applied and then answered by closing
  the connection (the client sees ConnectionLostError and must retry with the
  same sequence, which the idempotence table deduplicates);
* ``blackhole``: ops that are never answered (client-side timeouts);
* ``blackhole_partitions``: (topic, partition)s whose requests the leader never
  answers, while it answers the others (a leader cut off from one group's quorum);
* ``reply_delay[op]``: seconds to wait before answering (to force out-of-order
  replies on one pipelined connection);
* ``leader_reply_delay[op]``: the same on the leader only (a leader whose commits
  are slow; the others still answer NOT_LEADER at once).

Replies follow /tmp/prompts/wire.md shapes. Not a model of Raft: everything is
"committed" immediately.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio
from raftlog.client.errors import ErrorCode
from raftlog.client.protocol import (
    FrameDecoder,
    FrameError,
    RequestError,
    crc_of,
    encode_frame,
    error_reply,
    hello_ok,
    ok_reply,
    validate_request,
)
from raftlog.server.group_coordinator import GroupCoordinator, GroupError
from raftlog.server.group_ops import group_view_json


class FakeError(Exception):
    def __init__(self, code: ErrorCode, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message or code.value
        self.details = details


@dataclass
class FakePartition:
    batches: list[tuple[int, int, int, bytes]] = field(default_factory=list)
    end_offset: int = 0
    start_offset: int = 0
    changed: trio.Event = field(default_factory=trio.Event)
    # producer id -> recent (sequence, count, base_offset), the dedup window of 5 batches
    producers: dict[int, deque[tuple[int, int, int]]] = field(default_factory=dict)


@dataclass
class FakeCluster:
    name: str = "fake"
    leader: str = "n1"
    credential: str | None = None
    nodes: dict[str, FakeNode] = field(default_factory=dict)
    topics: dict[str, dict[str, Any]] = field(default_factory=dict)
    partitions: dict[tuple[str, int], FakePartition] = field(default_factory=dict)
    committed: dict[tuple[str, str, int], tuple[int, str]] = field(default_factory=dict)
    # (group, topic, partition) -> highest generation that committed: the same
    # fencing rules as the partition state machine (log/partition.py)
    fences: dict[tuple[str, str, int], int] = field(default_factory=dict)
    next_producer_id: int = 1
    # fault hooks
    errors: dict[str, list[tuple[ErrorCode, dict[str, Any]]]] = field(default_factory=dict)
    drop_after_apply: int = 0
    # error replies queued for an op once a drop_after_apply happened (what the retries get)
    errors_after_drop: list[tuple[ErrorCode, dict[str, Any]]] = field(default_factory=list)
    # produce sequence -> error replies its (re)tries get, once each, before anything else
    produce_errors_by_seq: dict[int, list[tuple[ErrorCode, dict[str, Any]]]] = field(
        default_factory=dict
    )
    blackhole: set[str] = field(default_factory=set)
    blackhole_nodes: set[str] = field(default_factory=set)  # nodes that never answer requests
    blackhole_partitions: set[tuple[str, int]] = field(default_factory=set)  # on the leader
    reply_delay: dict[str, float] = field(default_factory=dict)
    # The same, on the leader only: a leader whose commits are slow, while the
    # other nodes still answer NOT_LEADER at once.
    leader_reply_delay: dict[str, float] = field(default_factory=dict)
    # False: group_join answers lack "confirmed" (a server from before
    # cooperative rebalancing, which did not confirm a join still rebalancing)
    confirm_joins: bool = True
    # A batch's append stamp, as a leader takes it (never below the previous one);
    # tests set a fixed stamp to place records in time.
    stamp_ms: int | None = None
    # The [limits] the nodes announce in hello_ok (None: none, like an older node);
    # max_batch_bytes is then enforced on produce, as a node does.
    limits: dict[str, int] | None = None
    # False: RECORD_TOO_LARGE names no ``limit`` (a node from before KIP-126 splits)
    names_batch_limit: bool = True
    # n -> bytes: when the leader reaches its n-th produce request, every topic's
    # max_message_bytes is lowered to that (an alter the clients' metadata has not
    # seen); a larger value leaves a lower limit as it is, so limits only fall
    limit_at_produce: dict[int, int] = field(default_factory=dict)
    produces_seen: int = 0
    # observations
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    fetch_parked: trio.Event = field(default_factory=trio.Event)  # a long-poll fetch is waiting
    # consumer groups: the real coordinator core, answered at once (no long poll);
    # started "long ago" so that no start-up grace delays the first generation,
    # in memory only (no metadata group to persist generations through)
    groups: GroupCoordinator = field(default_factory=lambda: GroupCoordinator(-1e9, durable=False))

    def address(self, node_id: str) -> str:
        return self.nodes[node_id].address

    def bootstrap(self) -> list[str]:
        return [n.address for n in self.nodes.values()]

    def add_topic(self, name: str, partitions: int = 1, replicas: int = 3) -> dict[str, Any]:
        self.topics[name] = {
            "name": name,
            "config": {},
            "partitions": partitions,
            "replicas": replicas,
        }
        for p in range(partitions):
            self.partitions[(name, p)] = FakePartition()
        return self.topic_wire(name)

    def topic_wire(self, name: str) -> dict[str, Any]:
        t = self.topics[name]
        ids = list(self.nodes)
        return {
            "name": name,
            "config": t["config"],
            "partitions": [
                {
                    "partition": p,
                    "group": p + 1,
                    "replicas": ids[: t["replicas"]],
                    "leader": self.leader,
                    "leader_address": self.address(self.leader),
                }
                for p in range(t["partitions"])
            ],
        }

    def values(self, topic: str, partition: int) -> list[bytes]:
        """Every stored record value of a partition, in offset order (for asserts);
        compressed batches are decompressed here, not by the client's decoder."""
        import msgpack
        from raftlog.client import compression

        out: list[bytes] = []
        for _base, _ts, _count, blob in self.partitions[(topic, partition)].batches:
            if blob[:1] == bytes((compression.MAGIC,)):
                blob = compression.decompress(blob)
            out.extend(row[2] for row in msgpack.unpackb(blob, raw=False))
        return out


class FakeNode:
    def __init__(self, cluster: FakeCluster, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.address = ""
        self.connections = 0
        self._streams: set[trio.SocketStream] = set()
        cluster.nodes[node_id] = self

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        task_status.started(self.address)
        await trio.serve_listeners(self._handle, listeners)

    async def drop_all(self) -> None:
        """Close every open client connection of this node."""
        for stream in list(self._streams):
            await stream.aclose()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        self._streams.add(stream)
        decoder = FrameDecoder()
        send_lock = trio.Lock()
        helloed = False

        async def send(obj: dict[str, Any]) -> None:
            # The connection may be gone (closed by a drop hook): drop the reply.
            async with send_lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(encode_frame(obj))

        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        data = await stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    if not data:
                        break
                    try:
                        frames = decoder.feed(data)
                    except FrameError:
                        break
                    for frame in frames:
                        if not helloed:
                            self.cluster.hellos.append(frame)
                            cred = self.cluster.credential
                            if cred is not None and frame.get("credential") != cred:
                                await send(error_reply(0, ErrorCode.UNAUTHORIZED, "bad credential"))
                                return
                            helloed = True
                            await send(
                                hello_ok(self.node_id, self.cluster.name, self.cluster.limits)
                            )
                            continue
                        nursery.start_soon(self._serve_one, frame, send, stream)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._streams.discard(stream)
            await stream.aclose()

    async def _serve_one(self, frame: dict[str, Any], send: Any, stream: trio.SocketStream) -> None:
        cluster = self.cluster
        try:
            req_id, op, fields = validate_request(frame)
        except RequestError as exc:
            await send(error_reply(int(frame.get("id") or 0), exc.code, exc.message))
            return
        cluster.requests.append((self.node_id, op, fields))
        if op in cluster.blackhole or self.node_id in cluster.blackhole_nodes:
            await trio.sleep_forever()
        held = (fields.get("topic"), fields.get("partition")) in cluster.blackhole_partitions
        if held and self.node_id == cluster.leader:
            await trio.sleep_forever()
        delay = cluster.reply_delay.get(op)
        if self.node_id == cluster.leader:
            delay = cluster.leader_reply_delay.get(op, delay)
        if delay:
            await trio.sleep(delay)
        injected = cluster.errors.get(op)
        if injected:
            code, details = injected.pop(0)
            await send(error_reply(req_id, code, f"injected {code.value}", **details))
            return
        try:
            result = await self._dispatch(op, fields)
        except FakeError as exc:
            await send(error_reply(req_id, exc.code, exc.message, **exc.details))
            return
        if op == "produce" and cluster.drop_after_apply > 0:
            cluster.drop_after_apply -= 1
            cluster.errors.setdefault(op, []).extend(cluster.errors_after_drop)
            cluster.errors_after_drop = []
            await stream.aclose()  # applied, but the reply is lost
            return
        await send(ok_reply(req_id, **result))

    def _require_leader(self) -> None:
        if self.node_id != self.cluster.leader:
            raise FakeError(
                ErrorCode.NOT_LEADER,
                "not the leader",
                leader=self.cluster.leader,
                leader_address=self.cluster.address(self.cluster.leader),
            )

    def _partition(self, fields: dict[str, Any]) -> FakePartition:
        topic = fields["topic"]
        if topic not in self.cluster.topics:
            raise FakeError(ErrorCode.UNKNOWN_TOPIC, f"no topic {topic}")
        part = self.cluster.partitions.get((topic, fields["partition"]))
        if part is None:
            raise FakeError(ErrorCode.UNKNOWN_PARTITION, "no such partition")
        return part

    async def _dispatch(self, op: str, f: dict[str, Any]) -> dict[str, Any]:
        c = self.cluster
        if op == "metadata":
            return {
                "cluster": c.name,
                "node": self.node_id,
                "nodes": [{"id": n.node_id, "address": n.address} for n in c.nodes.values()],
                "topics": [c.topic_wire(t) for t in c.topics],
            }
        if op == "list_topics":
            return {"topics": sorted(c.topics)}
        if op == "describe_topic":
            if f["topic"] not in c.topics:
                raise FakeError(ErrorCode.UNKNOWN_TOPIC, "no such topic")
            wire = c.topic_wire(f["topic"])
            for p in wire["partitions"]:
                part = c.partitions[(f["topic"], p["partition"])]
                p.update(
                    term=1,
                    commit=len(part.batches),
                    start_offset=part.start_offset,
                    end_offset=part.end_offset,
                    replica_state=[],
                )
            return {"topic": wire}
        if op == "create_topic":
            self._require_leader()
            if f["topic"] in c.topics:
                raise FakeError(ErrorCode.TOPIC_EXISTS, "exists")
            if f["partitions"] < 1 or f["replicas"] > len(c.nodes):
                raise FakeError(ErrorCode.INVALID_REQUEST, "bad partitions/replicas")
            wire = c.add_topic(f["topic"], f["partitions"], f["replicas"])
            c.topics[f["topic"]]["config"] = f.get("config") or {}
            return {"topic": wire}
        if op == "delete_topic":
            self._require_leader()
            if c.topics.pop(f["topic"], None) is None:
                raise FakeError(ErrorCode.UNKNOWN_TOPIC, "no such topic")
            return {}
        if op == "init_producer":
            self._require_leader()
            pid = c.next_producer_id
            c.next_producer_id += 1
            return {"producer_id": pid}
        if op == "produce":
            return self._produce(f)
        if op == "fetch":
            return await self._fetch(f)
        if op == "list_offsets":
            self._require_leader()
            part = self._partition(f)
            reply = {"start_offset": part.start_offset, "end_offset": part.end_offset}
            at = f.get("timestamp_ms")
            if at is not None:
                first = next(((b, ts) for b, ts, _n, _r in part.batches if ts >= at), None)
                reply["offset"], reply["timestamp_ms"] = first if first else (None, None)
            return reply
        if op == "commit_offset":
            self._require_leader()
            self._partition(f)
            key = (f["group"], f["topic"], f["partition"])
            generation, fence = f.get("generation"), c.fences.get(key)
            if fence is not None and (generation is None or generation < fence):
                raise FakeError(ErrorCode.FENCED, f"generation {fence} already committed")
            c.committed[key] = (f["offset"], f.get("metadata", ""))
            if generation is not None:
                c.fences[key] = generation
            return {}
        if op == "fetch_committed":
            self._require_leader()
            self._partition(f)
            got = c.committed.get((f["group"], f["topic"], f["partition"]))
            return {"offset": got[0] if got else None, "metadata": got[1] if got else None}
        if op == "cluster_status":
            return {
                "node": self.node_id,
                "groups": [
                    {
                        "group": i + 1,
                        "topic": t,
                        "partition": p,
                        "role": "leader" if self.node_id == c.leader else "follower",
                        "leader": c.leader,
                        "term": 1,
                        "commit": len(part.batches),
                        "applied": len(part.batches),
                        "last_index": len(part.batches),
                        "replicas": [],
                    }
                    for i, ((t, p), part) in enumerate(sorted(c.partitions.items()))
                ],
            }
        if op == "member_list":
            return {
                "nodes": [
                    {"id": n.node_id, "address": n.address, "role": "voter", "groups": []}
                    for n in c.nodes.values()
                ]
            }
        if op.startswith("group_"):
            return self._group_op(op, f)
        raise FakeError(ErrorCode.INVALID_REQUEST, f"fake server does not do {op}")

    def _group_op(self, op: str, f: dict[str, Any]) -> dict[str, Any]:
        self._require_leader()
        groups, now = self.cluster.groups, trio.current_time()
        try:
            if op == "group_join":
                if f["topic"] not in self.cluster.topics:
                    raise FakeError(ErrorCode.UNKNOWN_TOPIC, f"no topic {f['topic']}")
                r = groups.join(
                    f["group"], f["topic"], f.get("member_id"), now,
                    partitions=self.cluster.topics[f["topic"]]["partitions"],
                    session_timeout=(f.get("session_timeout_ms") or 10000) / 1000,
                    rebalance_timeout=(f.get("rebalance_timeout_ms") or 60000) / 1000,
                    instance_id=f.get("instance_id"), owned=f.get("owned") or (),
                    cooperative=f.get("rebalance") == "cooperative",
                )  # fmt: skip
                parts = None if r.partitions is None else list(r.partitions)
                # One process, one leader: every answer is as good as confirmed.
                confirmed = {"confirmed": True} if self.cluster.confirm_joins else {}
                return {"member_id": r.member_id, "generation": r.generation,
                        "state": r.state.value, "partitions": parts, **confirmed}  # fmt: skip
            if op == "group_heartbeat":
                groups.heartbeat(f["group"], f["member_id"], f["generation"], now)
                return {}
            if op == "group_leave":
                return {"left": groups.leave(f["group"], f["member_id"], now)}
            me = {"coordinator": self.node_id}
            if op == "group_list":
                return {"groups": [group_view_json(v) for v in groups.list_groups(now)], **me}
            return {**group_view_json(groups.describe(f["group"], now)), **me}
        except GroupError as exc:
            raise FakeError(exc.code, exc.message, **exc.details) from None

    def _produce(self, f: dict[str, Any]) -> dict[str, Any]:
        self._require_leader()
        self.cluster.produces_seen += 1
        lowered = self.cluster.limit_at_produce.pop(self.cluster.produces_seen, None)
        if lowered is not None:
            for topic in self.cluster.topics.values():
                current = topic["config"].get("max_message_bytes")
                topic["config"]["max_message_bytes"] = min(lowered, current or lowered)
        part = self._partition(f)
        if crc_of(f["records"]) != f["crc"]:
            raise FakeError(ErrorCode.CORRUPT_BATCH, "crc mismatch")
        cap = self.cluster.topics[f["topic"]]["config"].get("max_message_bytes")
        node_cap = (self.cluster.limits or {}).get("max_batch_bytes")
        if node_cap is not None and (cap is None or node_cap < cap):
            cap = node_cap
        if cap is not None and len(f["records"]) > cap:  # as server/handlers.py does
            named = {"limit": cap} if self.cluster.names_batch_limit else {}
            raise FakeError(
                ErrorCode.RECORD_TOO_LARGE,
                f"batch of {len(f['records'])} bytes exceeds max_message_bytes={cap}",
                **named,
            )
        pid, seq = f.get("producer_id"), f.get("sequence")
        queued = self.cluster.produce_errors_by_seq.get(seq)
        if queued:
            code, details = queued.pop(0)
            raise FakeError(code, f"injected for sequence {seq}", **details)
        window = part.producers.get(pid) if pid is not None else None
        if pid is not None and window:
            for s, n, base in window:
                if s == seq and n == f["count"]:  # a retry (log/partition.py's rule)
                    return {"base_offset": base, "duplicate": True}
            last_seq, last_n, _ = window[-1]
            if seq != last_seq + last_n:
                raise FakeError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE, f"expected {last_seq + last_n}, got {seq}"
                )
        elif pid is not None and seq != 0:
            raise FakeError(ErrorCode.OUT_OF_ORDER_SEQUENCE, f"new producer must start at 0: {seq}")
        base = part.end_offset
        stamp = self.cluster.stamp_ms
        if stamp is None:
            stamp = int(time.time() * 1000)
        if part.batches:
            stamp = max(stamp, part.batches[-1][1])
        part.batches.append((base, stamp, f["count"], f["records"]))
        part.end_offset += f["count"]
        if pid is not None:
            window = part.producers.setdefault(pid, deque(maxlen=5))
            window.append((seq, f["count"], base))
        part.changed.set()
        part.changed = trio.Event()
        return {"base_offset": base, "duplicate": False}

    async def _fetch(self, f: dict[str, Any]) -> dict[str, Any]:
        self._require_leader()
        part = self._partition(f)
        offset = f["offset"]
        if offset < part.start_offset or offset > part.end_offset:
            raise FakeError(
                ErrorCode.OUT_OF_RANGE,
                "out of range",
                start_offset=part.start_offset,
                end_offset=part.end_offset,
            )
        if offset == part.end_offset and f.get("max_wait_ms"):
            self.cluster.fetch_parked.set()
            with trio.move_on_after(f["max_wait_ms"] / 1000):
                await part.changed.wait()
        max_bytes = f.get("max_bytes") or 1 << 20
        out: list[list[Any]] = []
        size = 0
        for base, ts, count, blob in part.batches:
            if base + count <= offset:
                continue
            if out and size + len(blob) > max_bytes:
                break
            out.append([base, ts, count, blob])
            size += len(blob)
        return {"batches": out, "start_offset": part.start_offset, "end_offset": part.end_offset}


async def _main(nodes: int, topics: list[str]) -> None:
    cluster = FakeCluster(leader="n1")
    async with trio.open_nursery() as nursery:
        for i in range(1, nodes + 1):
            await nursery.start(FakeNode(cluster, f"n{i}").serve)
        for name in topics:
            cluster.add_topic(name, partitions=3)
        print(",".join(cluster.bootstrap()), flush=True)


if __name__ == "__main__":
    # Manual runs (client benchmarks without a real cluster):
    #   python -m tests.client.fake_server [nodes] [topic ...]
    import sys

    trio.run(_main, int(sys.argv[1]) if len(sys.argv) > 1 else 1, sys.argv[2:])
