"""Crash-test helper: save Readies in a loop, acknowledging each after save() returns.

Run as ``python crash_writer.py DATA_DIR [ROLL_EVERY]``. For i = 1, 2, ... it saves, in ONE
``NodeStore.save``, the entry at index i of groups 1..3 together with the hard
state (term, vote, commit=i-1), then prints ``i``. The test SIGKILLs it at an
arbitrary moment; everything printed must survive. With ROLL_EVERY, every
that many saves the memtable is flushed, which switches to a new WAL file:
RocksDB then writes into recycled WAL files (NodeStore enables recycling).
"""

from __future__ import annotations

import sys

from raftlog.log.store import NodeStore
from raftlog.raft.types import ConfState, Entry, HardState, Ready

GROUPS = (1, 2, 3)
TERM = 3
# A bound so an orphaned writer stops on its own (the test kills it long before).
MAX_INDEX = 20_000


def payload(group: int, index: int) -> bytes:
    return f"g{group}-i{index}-".encode() * 4


def main(path: str, roll_every: int = 0) -> None:
    store = NodeStore.open(path, cluster="crash", node_id="n1", fsync=True)
    for gid in GROUPS:
        store.create_group(gid, ConfState(voters=("n1", "n2", "n3")))
    index = 0
    while index < MAX_INDEX:
        index += 1
        readies = [
            (
                gid,
                Ready(
                    hard_state=HardState(term=TERM, vote="n1", commit=index - 1),
                    entries=[Entry(term=TERM, index=index, data=payload(gid, index))],
                ),
            )
            for gid in GROUPS
        ]
        store.save(readies)
        if roll_every and index % roll_every == 0:
            store.db.flush()  # a new WAL file; the old one goes to the recycle list
        sys.stdout.write(f"{index}\n")
        sys.stdout.flush()
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
