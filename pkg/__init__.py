"""raftlog: a Raft-replicated message log.

The top-level folders of the repository are the subpackages (see pyproject.toml):
``raft`` (pure consensus core), ``log`` (RocksDB storage and state machines),
``server`` (the trio node process and CLI), ``client`` (client library and wire
protocol) and ``jepsen`` (fault injection and history checking).
"""

__version__ = "0.1.0"
