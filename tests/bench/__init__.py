"""Benchmark scripts (not tests): run them with ``python -m tests.bench.NAME``.

They start real node processes on 127.0.0.1 through the test harness and
print what they measured. Figures belong here and in the README, never in
asserts.
"""
