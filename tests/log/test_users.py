"""Users kept in the metadata log (log/users.py): what a record may hold, and how
the metadata state machine creates, alters and deletes them, deterministically,
across restarts and snapshots, and only once the cluster's log format allows."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raftlog.client.errors import ErrorCode
from raftlog.log.commands import DeleteUser, SetLogFormat, SetUser
from raftlog.log.features import (
    DYNAMIC_USERS,
    LOG_FORMAT,
    NODE_PEER_ADDRESS,
    USER_DENY_RULES,
    USER_EXPIRY_FETCH_QUOTA,
)
from raftlog.log.metadata import MetadataStateMachine
from raftlog.log.store import NodeStore
from raftlog.log.users import (
    DENY_KEYS,
    MAX_EXPIRES_AT_MS,
    merged_record,
    user_keys_format_problem,
    user_record_problem,
)

from .test_metadata import Meta

DIGEST_A = hashlib.sha256(b"token-a").hexdigest()
DIGEST_B = hashlib.sha256(b"token-b").hexdigest()
BILLING = {"token_sha256": DIGEST_A, "read": ["billing.*"], "write": ["billing.orders"]}


@pytest.fixture
def meta(store: NodeStore) -> Iterator[Meta]:
    meta = Meta(store)
    meta.run(SetLogFormat(DYNAMIC_USERS))
    yield meta


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({}, "needs a token or tls_names"),
        ({"token_sha256": "ABC"}, "64 lowercase hex"),
        ({"token_sha256": DIGEST_A.upper()}, "64 lowercase hex"),
        ({"token_sha256": DIGEST_A, "token": "x"}, "unknown user key 'token'"),
        ({"token_sha256": DIGEST_A, "read": "billing.*"}, "read must be a list"),
        ({"token_sha256": DIGEST_A, "write": ["a*b"]}, "write[0] 'a*b': '*' may only end"),
        ({"token_sha256": DIGEST_A, "groups": [""]}, "groups[0] must be a non-empty string"),
        ({"token_sha256": DIGEST_A, "cluster": 1}, "cluster must be true or false"),
        ({"token_sha256": DIGEST_A, "requests_per_sec": 0}, "requests_per_sec must be a number"),
        ({"token_sha256": DIGEST_A, "produce_bytes_per_sec": True}, "must be a number > 0"),
        ({"token_sha256": DIGEST_A, "max_connections": 1.5}, "max_connections must be an int"),
        ({"tls_names": [7]}, "tls_names[0] must be a non-empty string"),
        ({"token_sha256": DIGEST_A, "read": ["x"] * 1001}, "at most 1000"),
        ({"token_sha256": DIGEST_A, "fetch_bytes_per_sec": -1}, "fetch_bytes_per_sec must be"),
        ({"token_sha256": DIGEST_A, "expires_at_ms": 0}, "expires_at_ms must be an integer"),
        ({"token_sha256": DIGEST_A, "expires_at_ms": True}, "expires_at_ms must be an integer"),
        ({"token_sha256": DIGEST_A, "expires_at_ms": 1.5e12}, "expires_at_ms must be"),
        ({"token_sha256": DIGEST_A, "expires_at_ms": MAX_EXPIRES_AT_MS + 1}, "expires_at_ms"),
        ([], "must be a map"),
        ({"token_sha256": DIGEST_A, "deny_read": "secret*"}, "deny_read must be a list"),
        ({"token_sha256": DIGEST_A, "deny_write": ["a*b"]}, "deny_write[0] 'a*b': '*' may"),
        ({"token_sha256": DIGEST_A, "deny_admin": [None]}, "deny_admin[0] must be a non-empty"),
        ({"token_sha256": DIGEST_A, "deny_groups": ["g"] * 1001}, "deny_groups has 1001"),
        ({"token_sha256": DIGEST_A, "deny_read": ["x" * 1001]}, "deny_read[0] is longer than"),
        ({"token_sha256": DIGEST_A, "deny_reads": ["x"]}, "unknown user key 'deny_reads'"),
    ],
)
def test_a_bad_record_is_refused_with_what_is_wrong(record: Any, problem: str) -> None:
    found = user_record_problem(record)
    assert found is not None and problem in found


def test_good_records_pass() -> None:
    assert user_record_problem(BILLING) is None
    assert user_record_problem({"tls_names": ["billing.example.com"], "cluster": True}) is None
    assert user_record_problem({**BILLING, "requests_per_sec": 2.5, "max_connections": 3}) is None
    assert user_record_problem({**BILLING, "expires_at_ms": MAX_EXPIRES_AT_MS}) is None
    assert user_record_problem({**BILLING, **{key: ["x*", "y"] for key in DENY_KEYS}}) is None
    assert user_record_problem({**BILLING, "deny_read": []}) is None


def test_create_alter_and_delete(meta: Meta) -> None:
    (created,) = meta.run(SetUser("billing", BILLING, True))
    assert created.ok
    assert meta.sm.users["billing"] == dict(sorted(BILLING.items()))
    (again,) = meta.run(SetUser("billing", BILLING, True))
    assert again.error is ErrorCode.USER_EXISTS
    # An alter changes the keys given and keeps the token; None removes a key.
    meta.run(SetUser("billing", {"requests_per_sec": 5}, False))
    (altered,) = meta.run(SetUser("billing", {"write": [], "requests_per_sec": None}, False))
    assert altered.ok
    assert meta.sm.users["billing"] == {
        "read": ["billing.*"],
        "token_sha256": DIGEST_A,
        "write": [],
    }
    (deleted,) = meta.run(DeleteUser("billing"))
    assert deleted.ok and meta.sm.users == {}
    (unknown,) = meta.run(DeleteUser("billing"))
    assert unknown.error is ErrorCode.UNKNOWN_USER
    (missing,) = meta.run(SetUser("billing", {"read": []}, False))
    assert missing.error is ErrorCode.UNKNOWN_USER


def test_every_change_replaces_the_users_dict(meta: Meta) -> None:
    # server/metadata_users.py notices a change by the dict being another object.
    before = meta.sm.users
    meta.run(SetUser("billing", BILLING, True))
    created = meta.sm.users
    assert created is not before and before == {}
    meta.run(SetUser("nobody", BILLING, False))  # refused: nothing changes
    assert meta.sm.users is created


def test_an_alter_that_would_leave_a_bad_record_is_refused(meta: Meta) -> None:
    meta.run(SetUser("billing", BILLING, True))
    (no_credential,) = meta.run(SetUser("billing", {"token_sha256": None}, False))
    assert no_credential.error is ErrorCode.INVALID_REQUEST
    assert "needs a token or tls_names" in no_credential.message
    assert meta.sm.users["billing"]["token_sha256"] == DIGEST_A


def test_a_token_or_certificate_name_names_one_user(meta: Meta) -> None:
    meta.run(SetUser("billing", {**BILLING, "tls_names": ["Billing.example"]}, True))
    (same_token,) = meta.run(SetUser("ops", {"token_sha256": DIGEST_A}, True))
    assert same_token.error is ErrorCode.INVALID_REQUEST
    assert "already user 'billing'" in same_token.message
    (same_cert,) = meta.run(SetUser("ops", {"tls_names": ["billing.EXAMPLE"]}, True))
    assert same_cert.error is ErrorCode.INVALID_REQUEST
    assert "tls_names ['billing.example'] already name user 'billing'" in same_cert.message
    # A user may keep its own token when altered.
    (own,) = meta.run(SetUser("billing", {"token_sha256": DIGEST_A, "read": []}, False))
    assert own.ok
    assert sorted(meta.sm.users) == ["billing"]


def test_a_bad_name_is_refused(meta: Meta) -> None:
    (spaced,) = meta.run(SetUser("bad name", BILLING, True))
    assert spaced.error is ErrorCode.INVALID_REQUEST and "bad user name" in spaced.message
    (empty,) = meta.run(DeleteUser(""))
    assert empty.error is ErrorCode.INVALID_REQUEST


def test_users_wait_for_the_log_format(store: NodeStore) -> None:
    meta = Meta(store)
    meta.run(SetLogFormat(DYNAMIC_USERS - 1))
    (early,) = meta.run(SetUser("billing", BILLING, True))
    assert early.error is ErrorCode.UNSUPPORTED_VERSION
    assert f"need log format {DYNAMIC_USERS}" in early.message
    assert meta.sm.users == {}
    meta.run(SetLogFormat(DYNAMIC_USERS))
    (created,) = meta.run(SetUser("billing", BILLING, True))
    assert created.ok


def test_an_expiry_and_a_fetch_quota_wait_for_their_log_format(meta: Meta) -> None:
    # A format-4 node would refuse the key when applying it, and diverge.
    expiring = {**BILLING, "expires_at_ms": 1_800_000_000_000}
    (early,) = meta.run(SetUser("billing", expiring, True))
    assert early.error is ErrorCode.UNSUPPORTED_VERSION
    assert f"expires_at_ms needs log format {USER_EXPIRY_FETCH_QUOTA}" in early.message
    meta.run(SetUser("billing", BILLING, True))
    (early_alter,) = meta.run(SetUser("billing", {"expires_at_ms": 1_800_000_000_000}, False))
    assert early_alter.error is ErrorCode.UNSUPPORTED_VERSION
    (early_quota,) = meta.run(SetUser("billing", {"fetch_bytes_per_sec": 1e6}, False))
    assert early_quota.error is ErrorCode.UNSUPPORTED_VERSION
    assert "fetch_bytes_per_sec needs log format" in early_quota.message
    # Removing a key sets nothing an older node could refuse.
    (removal,) = meta.run(SetUser("billing", {"expires_at_ms": None}, False))
    assert removal.ok
    assert "expires_at_ms" not in meta.sm.users["billing"]
    meta.run(SetLogFormat(USER_EXPIRY_FETCH_QUOTA))
    (altered,) = meta.run(SetUser("billing", {"expires_at_ms": 1_800_000_000_000}, False))
    assert altered.ok
    assert meta.sm.users["billing"]["expires_at_ms"] == 1_800_000_000_000
    (cleared,) = meta.run(SetUser("billing", {"expires_at_ms": None}, False))
    assert cleared.ok and "expires_at_ms" not in meta.sm.users["billing"]


FENCED = {**BILLING, "read": ["*"], "deny_read": ["payroll.*"], "deny_groups": ["ops-*"]}


def test_deny_rules_wait_for_their_log_format(meta: Meta) -> None:
    """A format-6 node refuses a deny key when applying a SetUser (unknown key):
    written before every node reads format 7, it would be stored by some
    replicas and not others, which would then authorize differently."""
    meta.run(SetLogFormat(NODE_PEER_ADDRESS))
    (early,) = meta.run(SetUser("billing", FENCED, True))
    assert early.error is ErrorCode.UNSUPPORTED_VERSION
    assert early.message == (
        "user 'billing': deny_groups needs log format 7, and this cluster is at 6: every "
        "node must run a raftlog version that reads format 7 first (raftlog cluster status)"
    )
    assert meta.sm.users == {}
    meta.run(SetUser("billing", BILLING, True))
    for key in DENY_KEYS:
        (alter,) = meta.run(SetUser("billing", {key: ["x"]}, False))
        assert alter.error is ErrorCode.UNSUPPORTED_VERSION
        assert f"{key} needs log format 7" in alter.message
        # An empty list is a key all the same, which a format-6 node refuses.
        (empty,) = meta.run(SetUser("billing", {key: []}, False))
        assert empty.error is ErrorCode.UNSUPPORTED_VERSION
        # A removal sets nothing such a node could refuse (client alter_user sends
        # one to clear a deny list).
        (removal,) = meta.run(SetUser("billing", {key: None}, False))
        assert removal.ok
    assert meta.sm.users["billing"] == BILLING

    meta.run(SetLogFormat(USER_DENY_RULES))
    (created,) = meta.run(SetUser("fenced", {**FENCED, "token_sha256": DIGEST_B}, True))
    assert created.ok
    assert meta.sm.users["fenced"]["deny_read"] == ["payroll.*"]
    assert meta.sm.users["fenced"]["deny_groups"] == ["ops-*"]
    (altered,) = meta.run(SetUser("billing", {"deny_write": ["billing.ledger"]}, False))
    assert altered.ok and meta.sm.users["billing"] == {**BILLING, "deny_write": ["billing.ledger"]}
    (cleared,) = meta.run(SetUser("billing", {"deny_write": None}, False))
    assert cleared.ok and meta.sm.users["billing"] == BILLING
    (bad,) = meta.run(SetUser("billing", {"deny_read": ["a*b"]}, False))
    assert bad.error is ErrorCode.INVALID_REQUEST and "deny_read[0] 'a*b'" in bad.message


def test_every_deny_key_needs_format_7() -> None:
    assert USER_DENY_RULES == 7 <= LOG_FORMAT
    for key in DENY_KEYS:
        problem = user_keys_format_problem({key: ["x"]}, NODE_PEER_ADDRESS)
        assert problem is not None and problem.startswith(f"{key} needs log format 7")
        assert user_keys_format_problem({key: ["x"]}, USER_DENY_RULES) is None
        assert user_keys_format_problem({key: None}, NODE_PEER_ADDRESS) is None


def test_users_survive_a_restart_and_a_snapshot(
    store: NodeStore, data_dir: Path, meta: Meta, tmp_path: Path
) -> None:
    meta.run(SetUser("billing", BILLING, True), SetUser("ops", {"token_sha256": DIGEST_B}, True))
    data = meta.sm.snapshot_state()
    expected = meta.sm.users
    store.close()
    with NodeStore.open(data_dir, cluster="test", node_id="n1") as reopened:
        assert MetadataStateMachine(reopened).users == expected
    with NodeStore.open(tmp_path / "other", cluster="test", node_id="n2") as other:
        sm = MetadataStateMachine(other)
        batch = other.new_batch()
        sm.restore_state(data, batch)
        other.write(batch)
        assert sm.users == expected
        assert sm.snapshot_state() == data


def test_a_state_without_users_has_no_users_key(meta: Meta) -> None:
    # Builds from before users read such a state (and a snapshot of it).
    assert "users" not in msgpack.unpackb(meta.sm.snapshot_state(), raw=False)
    meta.run(SetUser("billing", BILLING, True))
    assert "users" in msgpack.unpackb(meta.sm.snapshot_state(), raw=False)


quota = st.none() | st.integers(1, 100)
changes = st.fixed_dictionaries(
    {},
    optional={
        "read": st.lists(st.sampled_from(["a", "b*", "*"]), max_size=2),
        "cluster": st.booleans(),
        "requests_per_sec": quota,
        "max_connections": quota,
        "token_sha256": st.sampled_from([DIGEST_A, DIGEST_B]),
    },
)


@settings(max_examples=50, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["u1", "u2"]), changes), max_size=8))
def test_alters_follow_the_merge_model(tmp_path_factory: Any, steps: list) -> None:
    """Against a plain dict model: each alter merges, and the state machine takes
    exactly the merges that leave a valid record with a token nobody else has."""
    with NodeStore.open(tmp_path_factory.mktemp("d"), cluster="t", node_id="n1") as store:
        meta = Meta(store)
        meta.run(SetLogFormat(DYNAMIC_USERS))
        meta.run(SetUser("u1", {"token_sha256": DIGEST_A}, True))
        model: dict[str, dict[str, Any]] = {"u1": {"token_sha256": DIGEST_A}}
        for name, change in steps:
            (result,) = meta.run(SetUser(name, change, False))
            if name not in model:
                assert result.error is ErrorCode.UNKNOWN_USER
                continue
            merged = merged_record(model[name], change)
            clash = any(
                r.get("token_sha256") == merged.get("token_sha256")
                for other, r in model.items()
                if other != name
            )
            if user_record_problem(merged) is None and not clash:
                assert result.ok
                model[name] = merged
            else:
                assert result.error is ErrorCode.INVALID_REQUEST
            assert meta.sm.users == model
