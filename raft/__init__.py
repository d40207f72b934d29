"""Pure Raft: a deterministic state machine per group, in the style of etcd-io/raft.

No sockets, no disk, no clock, no trio. Time is ``tick()`` calls; randomness
is an injected ``random.Random``. The driver feeds messages in with
``step()``, takes work out with ``ready()`` and acknowledges it with
``advance()`` (see ``raftlog.raft.types.Ready`` for the contract).
"""
