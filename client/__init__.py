"""The raftlog client library (blocking ``Client`` and trio ``AsyncClient``).

It knows only the wire protocol (``raftlog.client.protocol``); it never
imports ``raftlog.raft``, ``raftlog.log`` or ``raftlog.server``.
"""
