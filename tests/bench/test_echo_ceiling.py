"""echo_ceiling runs end to end: it starts its server and client processes on
127.0.0.1, counts answered requests and reports CPU per request, and stops them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_echo_ceiling_reports_requests_and_cpu_and_stops_its_processes():
    args = ["--clients", "4", "--procs", "2", "--seconds", "0.5"]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bench.echo_ceiling", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rate = re.search(r"4 clients, 2 process\(es\), \d+ s: ([\d,]+) requests/s", proc.stdout)
    assert rate is not None, proc.stdout
    assert int(rate.group(1).replace(",", "")) > 0
    assert re.search(r"CPU per request: client \d+ µs, server \d+ µs", proc.stdout)
