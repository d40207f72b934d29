"""Durable storage on RocksDB: the Raft log and hard state of many groups in one
database per node, and the partition and metadata state machines."""
