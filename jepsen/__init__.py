"""Fault injection, workloads, history checking and reports against real node processes.

Usage::

    raftlog jepsen run --nodes 3 --workload log --nemesis partition,kill,pause \\
        --time-limit 60 --concurrency 10 --seed 1 --out store/run1
    raftlog jepsen run --nodes 3 --nemesis kill,membership --spares 1 \\
        --time-limit 40 --seed 1 [--no-rejoin]
    raftlog jepsen run --nodes 3 --workload groups --nemesis kill,pause,partition \\
        --time-limit 60 --seed 4 [--consumers 3 --session-timeout 2]
    raftlog jepsen run --workload compact --nemesis partition,kill,pause \
        --time-limit 60 --seed 221 [--delete-retention-ms 5000]
    raftlog jepsen check store/run1/history.jsonl [--json] [--no-replicas]

Exit codes: 0 valid, 1 anomaly (or liveness failure, or unknown verdict),
2 usage error, 3 the run itself failed. A run directory holds
``cluster.toml`` (generated: peer links through proxies), ``history.jsonl``,
``results.json``, ``latency-raw.png``, ``rate.png``, ``logs/<node>.log`` and
``data/<node>/``.

Modules, one job each:

- ``history``: operations as JSON lines, the recorder, error -> outcome mapping.
- ``checker_log``: log anomalies (lost, duplicate, inconsistent offsets,
  reordering, stale reads, consumer skips, committed-offset regressions ...).
- ``checker_groups``: consumer groups under faults (loss past a commit, gaps
  inside one member's generation, commits past the end, wrong values;
  duplicates counted, unowned time, progress after the heal).
- ``checker_compact``: a compacted topic's history (only removals a later
  record of the key, or a tombstone's retention, explains; reads that skip a
  record still there).
- ``linearizable``: WGL search per partition on an append-only log model.
- ``partitions`` / ``proxy``: grudges and the per-directed-link TCP proxies.
- ``cluster``: node processes from a generated cluster.toml.
- ``nemesis``: the seeded fault schedule (kill, pause, partition, delay).
- ``membership``: the membership nemesis beside it (add/remove nodes, move
  partitions, transfer leaders through the client admin API; spare nodes
  join, removed ones are wiped and may rejoin), re-grown after the heal.
- ``workload``: the ``log``, ``offsets``, ``groups`` and ``compact`` client
  workloads and final drains; ``groups_workload``: the group-managed consumers
  of ``groups``; ``compact_workload``: keyed records and tombstones.
- ``replicas`` / ``datadirs``: after the nodes stop, every node's data dir
  (read by ``python -m raftlog.log.inspect``) against the other replicas and
  the final drain: State Machine Safety seen on disk.
- ``report`` / ``runner`` / ``cli``: artefacts, one whole run, the commands.

Deliberately unsafe node modes (``--unsafe-ack-before-commit``,
``--unsafe-follower-reads``) exist to prove the checkers catch real loss and
stale reads; ``--unsafe-no-fsync`` alone loses nothing on one machine because
SIGKILL does not drop the page cache.
"""
