"""Snapshot configuration, failpoints and the transfer client against bad peers."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from raftlog.client.protocol import FrameDecoder, encode_frame
from raftlog.log.store import NodeStore
from raftlog.raft.config import Status
from raftlog.raft.progress import ProgressState, ProgressStatus
from raftlog.raft.types import ConfState, Entry, HardState, Ready, Role
from raftlog.server.config import ConfigError
from raftlog.server.snapshot_transfer import (
    PeerConnection,
    SnapshotRange,
    TransferError,
    fetch_missing_batches,
)
from raftlog.server.snapshots import (
    SnapshotConfig,
    SnapshotManager,
    compaction_point,
    trailing_entries,
)

from .inproc_cluster import small_config


def test_config_defaults_and_environment_overrides() -> None:
    assert SnapshotConfig.from_env({}) == SnapshotConfig()
    cfg = SnapshotConfig.from_env(
        {"RAFTLOG_SNAPSHOT_ENTRIES": "7", "RAFTLOG_SNAPSHOT_TRAILING": "0",
         "RAFTLOG_SNAPSHOT_REQUEST_TIMEOUT_S": "2.5"}
    )  # fmt: skip
    assert (cfg.entries, cfg.trailing, cfg.request_timeout_s) == (7, 0, 2.5)
    assert cfg.entry_bytes == SnapshotConfig().entry_bytes
    sized = SnapshotConfig.from_env({"RAFTLOG_SNAPSHOT_TRAILING_BYTES": "4096"})
    assert (sized.trailing_bytes, sized.trailing) == (4096, SnapshotConfig().trailing)


@pytest.mark.parametrize(
    ("trailing", "trailing_bytes", "mean", "expected"),
    [
        (1000, 1 << 20, 0.0, 1000),  # nothing applied yet: the size is unknown
        (1000, 1 << 20, 100.0, 1000),  # small entries: the count is the limit
        (1000, 1 << 20, 70_000.0, 14),  # batches of ~70 KB: the bytes are
        (1000, 1 << 20, 2.0 * (1 << 20), 0),  # entries bigger than the cap
        (5, 0, 10.0, 0),  # trailing_bytes = 0: compact right up to the snapshot
        (0, 1 << 20, 10.0, 0),
    ],
)
def test_trailing_entries_are_capped_by_bytes(
    trailing: int, trailing_bytes: int, mean: float, expected: int
) -> None:
    assert trailing_entries(trailing, trailing_bytes, mean) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"RAFTLOG_SNAPSHOT_ENTRIES": "many"},
        {"RAFTLOG_SNAPSHOT_CHUNK_BYTES": "0"},
        {"RAFTLOG_SNAPSHOT_TRAILING": "-1"},
        {"RAFTLOG_SNAPSHOT_TRAILING_BYTES": "-1"},
        {"RAFTLOG_SNAPSHOT_REQUEST_TIMEOUT_S": "nan"},
        {"RAFTLOG_SNAPSHOT_REQUEST_TIMEOUT_S": "inf"},
    ],
)
def test_bad_config_values_are_refused(env: dict[str, str]) -> None:
    # A ConfigError: `raftlog node start` prints it as a one-line config error.
    ((var, _),) = env.items()
    with pytest.raises(ConfigError, match=var):
        SnapshotConfig.from_env(env)


def _run_with_failpoints(armed: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from raftlog.server.failpoints import failpoint\n"
        "failpoint('other')\nprint('before', flush=True)\n"
        "failpoint('here')\nprint('after', flush=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"RAFTLOG_FAILPOINTS": armed, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_armed_failpoint_sigkills_the_process_there() -> None:
    proc = _run_with_failpoints("x, here")
    assert proc.returncode == -9
    assert proc.stdout == "before\n"


def test_unarmed_failpoints_do_nothing() -> None:
    proc = _run_with_failpoints("")
    assert proc.returncode == 0
    assert proc.stdout == "before\nafter\n"


def test_snapshot_range_is_validated() -> None:
    import msgpack

    assert SnapshotRange.of(msgpack.packb({"start_offset": 3, "next_offset": 9})) == (
        SnapshotRange(3, 9)
    )
    with pytest.raises(ValueError):
        SnapshotRange.of(msgpack.packb({"start_offset": 9, "next_offset": 3}))


class _FakeSm:
    """Just enough of a PartitionStateMachine: nothing present, writes recorded."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.store = self

    def contiguous_end(self, lo: int, hi: int) -> int:
        return lo

    def new_batch(self) -> list[Any]:
        return []

    def put_fetched(self, batches: list[Any], wb: list[Any]) -> int:
        from raftlog.log.partition import PartitionStateMachine

        # The real validation, on a throwaway object.
        return PartitionStateMachine.put_fetched(self, batches, _Sink(wb))  # type: ignore[arg-type]

    def write(self, wb: list[Any], sync: bool = False) -> None:
        self.written.extend(wb)

    group_id = 1


class _Sink:
    def __init__(self, out: list[Any]) -> None:
        self.out = out

    def put(self, key: bytes, value: bytes) -> None:
        self.out.append(key)


async def _fake_peer(reply: dict[str, Any], task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        frames: list[dict[str, Any]] = []
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            frames += decoder.feed(data)
            while frames:
                frame = frames.pop(0)
                if frame.get("type") == "hello":
                    await stream.send_all(encode_frame({"type": "hello_ok", "version": 1}))
                else:
                    await stream.send_all(encode_frame({"id": frame["id"], "ok": True, **reply}))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


@pytest.mark.parametrize(
    "reply",
    [
        {"batches": [], "start_offset": 0},  # the sender has nothing
        {"batches": [[50, 1, 2, b"r"]], "start_offset": 0},  # a batch elsewhere
        {"batches": [[0, 1, 2, b"r"], [5, 1, 1, b"r"]], "start_offset": 0},  # a hole
        {"batches": [["x", 1]], "start_offset": 0},  # garbage
    ],
)
async def test_bad_answers_fail_the_transfer_without_writing_holes(
    tmp_path: Any, nursery: trio.Nursery, reply: dict[str, Any]
) -> None:
    port = await nursery.start(_fake_peer, reply)
    cfg = small_config(tmp_path)
    conn = await PeerConnection.open(f"127.0.0.1:{port}", node_id="n2", cfg=cfg, timeout_s=5)
    sm = _FakeSm()
    try:
        with pytest.raises(TransferError):
            await fetch_missing_batches(
                sm=sm, conn=conn, gid=1, wanted=SnapshotRange(0, 10), node_id="n2",
                cfg=cfg, chunk_bytes=100, timeout_s=5,
            )  # fmt: skip
    finally:
        await conn.aclose()
    assert sm.written == []


def _group_seen_by(leader_progress: dict[str, ProgressStatus]) -> Any:
    """A stand-in driver group whose Raft core reports ``leader_progress`` (n1's view)."""
    status = Status(
        id="n1", term=1, role=Role.LEADER if leader_progress else Role.FOLLOWER, leader="n1",
        commit=30, applied=30, last_index=30, conf_state=ConfState(voters=("n1",)),
        progress=leader_progress,
    )  # fmt: skip
    return SimpleNamespace(raft=SimpleNamespace(status=lambda: status))


async def _compact_at_start(tmp_path: Any, group: Any, config: SnapshotConfig) -> int:
    """30 entries, a snapshot at 25 left uncompacted by a crash: the first index after
    the manager's start-up compaction."""
    with NodeStore.open(tmp_path / "n1", cluster="test", node_id="n1", fsync=False) as store:
        store.create_group(4, ConfState(voters=("n1",)))
        ents = [Entry(1, i, data=b"e") for i in range(1, 31)]
        store.save([(4, Ready(entries=ents, hard_state=HardState(1, "n1", 30)))])
        store.create_snapshot(4, 25, None, b"state")  # ... and the process died here
        manager = SnapshotManager(SimpleNamespace(groups={4: group}, store=store), config)
        manager._state(4).mean_entry_bytes = 1.0  # as if learned from the last snapshot
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(manager.run)
                # The start-up compaction task runs until it is done.
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        assert manager.stats["compactions"] == 1
        return store.group(4).first_index()


async def test_a_snapshot_left_uncompacted_by_a_crash_is_compacted_at_start(tmp_path: Any):
    first = await _compact_at_start(tmp_path, _group_seen_by({}), SnapshotConfig(trailing=3))
    assert first == 23


def _follower(match: int, *, active: bool = True, snapshot: bool = False) -> ProgressStatus:
    state = ProgressState.SNAPSHOT if snapshot else ProgressState.REPLICATE
    return ProgressStatus(match=match, next=match + 1, state=state, inflight=0,
                          recent_active=active)  # fmt: skip


@pytest.mark.parametrize(
    ("followers", "first"),
    [
        ({}, 24),  # a follower: the byte cap alone (2 bytes of 1-byte entries)
        ({"n2": _follower(30)}, 24),  # caught up
        ({"n2": _follower(30), "n3": _follower(20)}, 21),  # slightly behind: held back
        ({"n2": _follower(30), "n3": _follower(5)}, 16),  # far behind: `trailing` at most
        ({"n2": _follower(30), "n3": _follower(5, active=False)}, 24),  # not heard from
        ({"n2": _follower(30), "n3": _follower(5, snapshot=True)}, 24),  # on the snapshot path
    ],
)
async def test_a_leader_holds_compaction_back_for_a_live_follower_up_to_trailing(
    tmp_path: Any, followers: dict[str, ProgressStatus], first: int
):
    # Snapshot at 25; trailing = 10 entries, trailing_bytes = 2 at 1 byte per entry.
    leader_view = {"n1": _follower(30), **followers} if followers else {}
    config = SnapshotConfig(trailing=10, trailing_bytes=2)
    assert await _compact_at_start(tmp_path, _group_seen_by(leader_view), config) == first


@pytest.mark.parametrize(
    ("snapshot_index", "keep", "trailing", "needed", "upto"),
    [
        (100, 5, 50, [], 95),
        (100, 5, 50, [100, 99], 95),  # every follower has what would be deleted
        (100, 5, 50, [100, 70], 70),  # one needs entries from 71 on
        (100, 5, 50, [10], 50),  # never more than `trailing` entries
        (100, 0, 0, [10], 100),  # trailing = 0: compact up to the snapshot regardless
    ],
)
def test_compaction_point(
    snapshot_index: int, keep: int, trailing: int, needed: list[int], upto: int
) -> None:
    assert compaction_point(snapshot_index, keep, trailing, needed) == upto
