"""client/users.py: what a user_create / user_alter request carries."""

from __future__ import annotations

import hashlib
import inspect

import pytest
from raftlog.client.errors import NotAppliedError, UnsupportedVersionError
from raftlog.client.users import applied_metadata, change_index, generate_token, user_fields


def test_only_the_tokens_hash_and_the_given_keys_are_sent() -> None:
    token = generate_token()
    fields = user_fields(
        token,
        {"read": ("a.*",), "write": None, "cluster": False, "requests_per_sec": 2.5},
        remove=["max_connections"],
    )
    assert fields == {
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "read": ["a.*"],
        "cluster": False,
        "requests_per_sec": 2.5,
        "max_connections": None,
    }
    assert token not in repr(fields)
    # An expiry travels as the integer it is; removing it sends a None.
    assert user_fields(None, {"expires_at_ms": 1_900_000_000_000}) == {
        "expires_at_ms": 1_900_000_000_000
    }
    assert user_fields(None, {}, remove=["expires_at_ms"]) == {"expires_at_ms": None}


def test_deny_lists_are_sent_when_given_and_an_empty_one_is_never_sent_as_such() -> None:
    """An empty deny list denies nothing: a create leaves it out and an alter
    removes the key (a None), neither of which needs log format 7, so creating a
    user without deny rules works on a cluster below it."""
    given = {"read": ["*"], "deny_read": ("secret*",), "deny_write": (), "deny_groups": None}
    assert user_fields(None, given) == {"read": ["*"], "deny_read": ["secret*"]}
    assert user_fields(None, given, altering=True) == {
        "read": ["*"], "deny_read": ["secret*"], "deny_write": None,
    }  # fmt: skip
    # A grant list, emptied, is sent as one: it replaces the user's list.
    assert user_fields(None, {"read": []}, altering=True) == {"read": []}
    with pytest.raises(TypeError, match="deny_read takes a list of patterns"):
        user_fields(None, {"deny_read": "secret*"})


def test_a_string_where_patterns_belong_is_refused() -> None:
    with pytest.raises(TypeError, match="read takes a list of patterns"):
        user_fields(None, {"read": "billing.*"})
    with pytest.raises(ValueError, match="cannot remove 'read'"):
        user_fields(None, {}, remove=["read"])


def test_generated_tokens_are_long_and_distinct() -> None:
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 43 for t in tokens)


def test_create_and_alter_take_every_setting_and_pass_each_on() -> None:
    """Both build their request from SETTING_KEYS: a setting added to one signature
    and not to the list (or the other signature) would be dropped or fail."""
    from raftlog.client.aio import AsyncClient
    from raftlog.client.users import SETTING_KEYS, setting_arguments

    for method in (AsyncClient.create_user, AsyncClient.alter_user):
        params = inspect.signature(method).parameters
        keywords = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
        assert keywords - {"token", "remove", "wait"} == set(SETTING_KEYS), method.__name__
    arguments = {key: f"value of {key}" for key in SETTING_KEYS}
    assert setting_arguments({**arguments, "self": object(), "name": "n"}) == arguments


def test_the_index_a_change_was_applied_at_and_how_far_a_node_applied() -> None:
    assert change_index({"user": {}, "metadata_index": 42}) == 42
    for reply in ({}, {"metadata_index": None}, {"metadata_index": "42"}):
        with pytest.raises(UnsupportedVersionError, match="the change was made"):
            change_index(reply)
    status = {"groups": [{"group": 7, "applied": 99}, {"group": 0, "applied": 41}]}
    assert applied_metadata(status) == 41  # the metadata group's, not another's
    assert applied_metadata({"groups": [{"group": 7, "applied": 99}]}) is None
    assert applied_metadata({}) is None


def test_a_wait_that_timed_out_names_the_nodes_behind_and_why() -> None:
    exc = NotAppliedError(42, {"n3": "down", "n2": "applied to 40"}, 2.5)
    assert exc.index == 42 and list(exc.behind) == ["n2", "n3"]
    assert exc.message == (
        "committed at metadata index 42, but not applied within 2.5s by n2, n3: "
        "n2 (applied to 40); n3 (down)"
    )
