"""Log compaction on three nodes in one trio run: every replica removes the same
records, including a follower that was cut off while the others compacted and
catches up by snapshot (its own batches are then older than the snapshot's)."""

from __future__ import annotations

from typing import Any

import trio
from raftlog.client.protocol import decode_batch, encode_records

from .inproc_cluster import small_config
from .test_snapshot_inproc import SNAP, SnapCluster, topic_group

KEYS = [b"k%d" % i for i in range(5)]


async def produce_kv(c: SnapCluster, node: str, topic: str, key: bytes, value: bytes) -> None:
    blob, count, crc = encode_records([(key, value, None, None)])
    await c.call(node, "produce", topic=topic, partition=0, records=blob, count=count, crc=crc)


def visible(sm: Any) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    for base, ts, _, blob in sm.read(sm.start_offset, 1 << 30):
        out += [(r.offset, r.key, r.value) for r in decode_batch(base, ts, blob, sm.start_offset)]
    return out


def latest_per_key(sm: Any) -> bool:
    keys = [k for _, k, _ in visible(sm)]
    return len(keys) == len(set(keys))


async def test_a_cut_off_follower_converges_to_the_compacted_log(
    tmp_path: Any, nursery: trio.Nursery
) -> None:
    c = SnapCluster(small_config(tmp_path), nursery)
    c.compaction_interval_s = 0.02
    for node in c.node_ids:
        await c.start(node)
    try:
        gid, leader = await topic_group(c, "kv", cleanup_policy="compact")
        sms = lambda: [c.driver(n).groups[gid].sm for n in c.node_ids]  # noqa: E731
        written: dict[bytes, tuple[int, bytes]] = {}
        n = 0

        async def write(rounds: int) -> None:
            nonlocal n
            for _ in range(rounds):
                for key in KEYS:
                    n += 1
                    await produce_kv(c, leader, "kv", key, b"v%d" % n)
                    written[key] = (n, b"v%d" % n)

        await write(4)  # 20 records, 5 keys: a sweep removes 15
        await c.wait_for(
            lambda: all(sm.compactions and latest_per_key(sm) for sm in sms()),
            what="a sweep applied on every replica",
        )
        follower = next(x for x in c.node_ids if x != leader)
        c.net.isolate(follower, [x for x in c.node_ids if x != follower])
        # The others go on: more sweeps rewrite batches the follower still holds
        # uncompacted, and the Raft log is compacted past it (snapshot catch-up).
        await write(4 * SNAP.entries // len(KEYS))
        lsm = c.driver(leader).groups[gid].sm
        await c.wait_for(
            lambda: (
                c.stores[leader].group(gid).first_index()
                > c.stores[follower].group(gid).last_index() + 1
                and lsm.compacted_below == lsm.next_offset
            ),
            what="log compaction past the follower, and a sweep to the end",
        )
        c.net.heal()

        def converged() -> bool:
            marks = {(sm.applied_index, sm.compactions, sm.next_offset) for sm in sms()}
            return len(marks) == 1

        await c.wait_for(converged, within=20, what="the follower caught up")
        assert c.driver(follower).snapshots.stats.get("snapshots_installed", 0) >= 1
        # Byte for byte the same batches on every replica, each key once, its latest value.
        reads = [sm.read(0, 1 << 30) for sm in sms()]
        assert reads[0] == reads[1] == reads[2]
        got = {k: v for _, k, v in visible(lsm)}
        assert got == {k: v for k, (_, v) in written.items()}
        assert latest_per_key(lsm)
    finally:
        await c.stop_all()
