"""Fault injection, workloads, history checking and reports against real node processes."""
