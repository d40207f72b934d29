"""client/keepalive.py's helper on real loopback sockets, read back with getsockopt."""

from __future__ import annotations

import socket

import pytest
from raftlog.client.keepalive import keepalive_problem, keepalive_times, set_keepalive

from tests.tcp_sockets import DEFAULT_KEEPALIVE, KeepaliveOptions, connected_pair, keepalive_of

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_USER_TIMEOUT"), reason="reads Linux's TCP options back"
)


@pytest.mark.parametrize(
    ("idle_s", "expected"),
    [
        (30, DEFAULT_KEEPALIVE),
        (1, KeepaliveOptions(True, 1, 1, 3, 4_000)),  # the interval never drops to 0
        (7, KeepaliveOptions(True, 7, 2, 3, 13_000)),
        (32767, KeepaliveOptions(True, 32767, 10922, 3, 65_533_000)),  # the kernel's largest
    ],
)
def test_keepalive_sets_idle_interval_probes_and_user_timeout(
    idle_s: int, expected: KeepaliveOptions
) -> None:
    with connected_pair() as (accepted, dialled):
        untouched = keepalive_of(dialled)
        set_keepalive(accepted, idle_s)
        assert keepalive_of(accepted) == expected
        assert keepalive_of(dialled) == untouched  # per socket, not per connection
    assert not untouched.enabled


def test_zero_leaves_the_socket_as_the_system_made_it() -> None:
    with connected_pair() as (accepted, dialled):
        set_keepalive(accepted, 0)
        assert keepalive_of(accepted) == keepalive_of(dialled)
        assert not keepalive_of(accepted).enabled
        assert keepalive_of(accepted).user_timeout_ms == 0
    assert keepalive_times(0) is None


def test_a_platform_without_an_option_still_gets_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_timeout = socket.TCP_USER_TIMEOUT
    monkeypatch.delattr(socket, "TCP_USER_TIMEOUT")
    with connected_pair() as (accepted, _):
        set_keepalive(accepted, 30)
        monkeypatch.setattr(socket, "TCP_USER_TIMEOUT", user_timeout, raising=False)
        assert keepalive_of(accepted) == KeepaliveOptions(True, 30, 10, 3, 0)


class _Refusing:
    """A socket that refuses one option, as a platform or a reset socket may."""

    def __init__(self, refused: int) -> None:
        self.refused = refused
        self.set: dict[int, int] = {}

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        if option == self.refused:
            raise OSError(22, "Invalid argument")
        self.set[option] = value


def test_an_option_the_socket_refuses_is_skipped_and_the_rest_still_set() -> None:
    sock = _Refusing(socket.TCP_KEEPIDLE)
    set_keepalive(sock, 30)
    assert sock.set == {
        socket.SO_KEEPALIVE: 1,
        socket.TCP_KEEPINTVL: 10,
        socket.TCP_KEEPCNT: 3,
        socket.TCP_USER_TIMEOUT: 60_000,
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (-1, "must be from 0 (off) to 32767 seconds, got -1"),
        (32768, "must be from 0 (off) to 32767 seconds, got 32768"),
        (1.5, "must be an int, got float 1.5"),
        (True, "must be an int, got bool True"),
        (None, "must be an int, got NoneType None"),
    ],
)
def test_keepalive_problem_names_what_is_wrong(value: object, problem: str) -> None:
    assert keepalive_problem(value) == problem
    for good in (0, 1, 30, 32767):
        assert keepalive_problem(good) is None
