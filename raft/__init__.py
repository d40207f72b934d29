"""Pure Raft: a deterministic state machine per group, in the style of etcd-io/raft.

No sockets, no disk, no clock, no trio. Time is ``tick()`` calls; randomness
is an injected ``random.Random``. The driver feeds messages in with
``step()``, takes work out with ``ready()`` and acknowledges it with
``advance()`` (see ``raftlog.raft.types.Ready`` for the contract).

Modules, one job each:

- ``types``: the values exchanged with the driver (Entry, Message, Ready ...).
- ``storage``: the read-side Storage protocol; ``memory_storage``: an
  in-memory implementation with the writers tests and simulators use.
- ``node``: ``RaftNode``, the state machine (elections, replication, reads,
  transfer, membership); ``config``: its ``Config`` and ``Status``.
- ``raft_log``: durable + unstable log view; ``progress``: the leader's
  per-follower flow control; ``quorum``: majority/joint arithmetic;
  ``read_only``: pending ReadIndex requests; ``conf_change``: membership
  arithmetic.
- ``codec``: msgpack encoding of all of the above; ``errors``: exceptions.
"""
