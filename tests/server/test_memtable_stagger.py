"""Real node processes: each node of a cluster opens RocksDB with its own memtable size
(log/store.py staggered_write_buffer_bytes), so replicas do not flush in step."""

from __future__ import annotations

from collections.abc import Callable

from raftlog.log.store import staggered_write_buffer_bytes

from tests.log.test_store import _options_write_buffer_size
from tests.server.cluster_harness import LocalCluster


def test_the_nodes_of_a_cluster_flush_at_different_memtable_sizes(
    local_cluster: Callable[..., LocalCluster],
) -> None:
    cluster = local_cluster(nodes=3)
    cluster.start_all()
    sizes = [_options_write_buffer_size(n.data_dir) for n in cluster.cfg.nodes]
    assert sizes == [staggered_write_buffer_bytes(i, 3) for i in range(3)]
    assert len(set(sizes)) == 3
