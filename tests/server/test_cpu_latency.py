"""[cluster] cpu_latency_qos_us: a node holds a Linux CPU latency QoS request while it runs.

The unit tests use a plain file as the device (it records what was written).
The kernel tests use the real /dev/cpu_dma_latency, whose read gives the
limit in force over all holders; they need write access to it (root).
"""

from __future__ import annotations

import logging
import os
import struct
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from raftlog.client.bench import cpu_latency_limit_us as effective_us
from raftlog.server.cpu_latency import DEVICE, MAX_US, cpu_latency_request

from tests.server.cluster_harness import LocalCluster


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_nothing_asked_opens_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), cpu_latency_request(None, str(tmp_path / "no")) as held:
        assert held is None
    assert caplog.records == []


def test_the_value_is_written_and_the_file_held_until_the_block_ends(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.write_bytes(b"")
    before = _open_fds()
    with cpu_latency_request(37, str(device)) as held:
        assert held == 37
        assert struct.unpack("=i", device.read_bytes()) == (37,)
        assert _open_fds() == before + 1  # the request lasts as long as the file is open
    assert _open_fds() == before


def test_a_device_that_cannot_be_opened_is_a_warning_and_no_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "missing"
    with caplog.at_level(logging.WARNING), cpu_latency_request(0, str(missing)) as held:
        assert held is None
    [record] = caplog.records
    assert "cpu_latency_qos_unavailable" in record.getMessage()
    assert str(missing) in record.getMessage()


@pytest.mark.parametrize("us", [-1, MAX_US + 1])
def test_values_the_device_cannot_take_are_refused(tmp_path: Path, us: int) -> None:
    with pytest.raises(ValueError, match="must be in"), cpu_latency_request(us, str(tmp_path)):
        pass


def _writable_device() -> bool:
    return os.path.exists(DEVICE) and os.access(DEVICE, os.W_OK)


needs_device = pytest.mark.skipif(
    not _writable_device(), reason=f"{DEVICE} is missing or not writable (needs root)"
)


def _request_below(current: int | None) -> int:
    """A request the kernel must obey: lower than the limit now in force."""
    if current is None or current <= 0:
        pytest.skip(f"{DEVICE} reads {current}: another process already holds 0")
    return 0


@needs_device
def test_the_kernel_obeys_the_request_while_held_and_drops_it_after() -> None:
    before = effective_us()
    want = _request_below(before)
    with cpu_latency_request(want) as held:
        assert held == want
        assert effective_us() == want
    assert effective_us() == before


def _metric(address: str, name: str) -> float | None:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def _wait_for(check: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s}s: {what}")
        time.sleep(0.05)


@needs_device
def test_a_node_holds_the_request_while_it_runs(
    local_cluster: Callable[..., LocalCluster],
) -> None:
    before = effective_us()
    want = _request_below(before)
    cluster = local_cluster(nodes=1, metrics=True, cpu_latency_qos_us=want)
    cluster.start_all()
    address = cluster.cfg.nodes[0].metrics_address
    assert address is not None
    assert effective_us() == want
    _wait_for(
        lambda: _metric(address, "raftlog_cpu_latency_qos_us") == want,
        10,
        "the node's gauge shows the request it holds",
    )
    cluster.stop_all()
    # The kernel drops the request with the process's file: nothing outlives the node.
    _wait_for(lambda: effective_us() == before, 10, f"{DEVICE} back to {before}")
