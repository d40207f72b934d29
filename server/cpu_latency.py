"""Hold a Linux CPU latency QoS request while the node runs (opt-in).

Every hop of a Raft round (client -> leader -> follower fsync -> leader ->
client) wakes a process that sleeps in epoll or in fdatasync. When its CPU has
gone idle, the wake-up first has to bring that CPU out of its idle state. On
this project's benchmark VM that costs tens of microseconds per wake-up (an
idle vCPU halts and the hypervisor must resume it), several times per request.

Linux lets a process bound that cost: while a process keeps a 32-bit value
written to ``/dev/cpu_dma_latency`` open, no CPU enters an idle state whose
exit latency exceeds it (Documentation/power/pm_qos_interface.rst; tuned's
``latency-performance`` profile and cyclictest use the same device). 0 means
idle CPUs poll instead of halting. The request is per open file: it ends when
the file is closed, so also when the process dies, and the kernel obeys the
lowest value over all holders.

The price is power (on a VM: host CPU time): an idle CPU keeps spinning.
That is why it is off unless ``[cluster] cpu_latency_qos_us`` asks for it.
``raftlog bench`` reports the limit in force (client/bench.py,
``cpu_latency_limit_us``), so a figure says whether it was measured with one.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

DEVICE = "/dev/cpu_dma_latency"
# The device takes a native-endian signed 32-bit value in microseconds.
MAX_US = 2**31 - 1


@contextmanager
def cpu_latency_request(us: int | None, device: str = DEVICE) -> Iterator[int | None]:
    """Hold a request of ``us`` microseconds until the block exits.

    Yields the value held, or None when none was asked for (``us is None``) or
    the device cannot take it. A node must not refuse to start over a tuning
    knob, so a failure (not root, no such device in a container) is a warning
    and the node runs without the request; the ``raftlog_cpu_latency_qos_us``
    gauge shows -1 then, for an operator's alert.
    """
    if us is None:
        yield None
        return
    if not 0 <= us <= MAX_US:
        raise ValueError(f"cpu latency request must be in [0, {MAX_US}] us, got {us}")
    fd = None
    try:
        fd = os.open(device, os.O_WRONLY)
        os.write(fd, struct.pack("=i", us))
    except OSError as exc:
        if fd is not None:
            os.close(fd)
        log.warning(
            "event=cpu_latency_qos_unavailable device=%s requested_us=%d error=%r"
            " (running without it: needs write access to the device, i.e. root)",
            device,
            us,
            exc,
        )
        yield None
        return
    log.info("event=cpu_latency_qos_held device=%s us=%d", device, us)
    try:
        yield us
    finally:
        os.close(fd)  # ends the request (the kernel drops it with the file)
