"""`raftlog jepsen run` when the harness itself breaks: exit 3 and the traceback kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from raftlog.jepsen import runner
from raftlog.jepsen.cli import jepsen


def test_a_harness_error_exits_3_and_keeps_its_whole_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_run(opts: runner.RunOptions) -> dict:
        def deep_in_a_worker() -> None:
            raise ValueError("`seconds` must be non-negative")

        try:
            deep_in_a_worker()
        except ValueError as exc:
            # What trio's nested nurseries hand up: the cause is several groups down.
            raise ExceptionGroup("outer", [ExceptionGroup("inner", [exc])]) from None
        return {}

    monkeypatch.setattr(runner, "run", broken_run)
    out = tmp_path / "run"
    res = CliRunner().invoke(jepsen, ["run", "--time-limit", "1", "--out", str(out)])
    assert res.exit_code == 3, res.output
    saved = out / "harness-error.txt"
    assert f"traceback: {saved}" in res.output
    text = saved.read_text()
    # The innermost frame and message, which the one-line repr does not show.
    assert "deep_in_a_worker" in text and "must be non-negative" in text
