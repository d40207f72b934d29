"""Crash-test helper: a one-node "driver" that persists, applies and acknowledges produces.

Run as ``python crash_producer.py DATA_DIR``. For i = 1, 2, ... it saves the Raft
entry i (one idempotent produce of the record ``r<i>``) with commit=i, synced;
applies it to the partition state machine into a batch written UNSYNCED (as the
server's driver does); then prints ``i base_offset``, its acknowledgement.
After a SIGKILL, recovery re-applies the Raft log from the state machine's
applied index + 1 up to the committed index.
"""

from __future__ import annotations

import sys

from raftlog.client.protocol import encode_records
from raftlog.log.commands import Produce, encode_entry_commands
from raftlog.log.partition import PartitionStateMachine
from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry, HardState, Ready

GROUP = 1
PRODUCER_ID = 42
MAX_INDEX = 20_000  # an orphaned writer stops on its own


def record(index: int) -> bytes:
    return b"r%d" % index


def entry(index: int) -> Entry:
    blob, count, crc = encode_records([(None, record(index), None, None)])
    cmd = Produce(blob, count, crc, PRODUCER_ID, index - 1, 1_000 + index)
    return Entry(term=1, index=index, data=encode_entry_commands([cmd]))


def main(path: str) -> None:
    store = NodeStore.open(path, cluster="crash", node_id="n1", fsync=True)
    store.create_group(GROUP, ConfState(voters=("n1",)))
    sm = PartitionStateMachine(store, GROUP)
    for index in range(1, MAX_INDEX + 1):
        e = entry(index)
        store.save([(GROUP, Ready(hard_state=HardState(1, "n1", index), entries=[e]))])
        batch = store.new_batch()
        (results,) = sm.apply([e], batch)
        store.write(batch, sync=False)
        sys.stdout.write(f"{index} {results[0].base_offset}\n")
        sys.stdout.flush()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
