"""server/acl.py: patterns, the rule of every request type, and per-user quotas."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raftlog.client.protocol import REQUESTS
from raftlog.server import acl
from raftlog.server.acl import User
from raftlog.server.config import QuotaConfig
from raftlog.server.listener import Quotas

BILLING = User(
    name="billing",
    token="tok-b",
    read=("billing.*", "events"),
    write=("billing.*",),
    admin=("billing.*",),
    groups=("billing-*",),
)
NOBODY = User(name="nobody", token="tok-n")
OPS = User(
    name="ops", token="tok-o", read=("*",), write=("*",), admin=("*",), groups=("*",), cluster=True
)


def test_every_request_type_has_a_rule_and_no_rule_is_stale() -> None:
    # A request added to the protocol without a rule would be refused to every
    # user; a rule for a request that no longer exists is dead code.
    assert set(acl.RULES) == set(REQUESTS)


def test_an_operation_without_a_rule_is_refused() -> None:
    assert acl.check(OPS, "drop_everything", {}) == (
        "request type 'drop_everything' has no authorization rule"
    )


@pytest.mark.parametrize(
    ("patterns", "name", "expected"),
    [
        (("events",), "events", True),
        (("events",), "events2", False),
        (("events",), "event", False),
        (("billing.*",), "billing.orders", True),
        (("billing.*",), "billing.", True),
        (("billing.*",), "billing", False),
        (("billing.*",), "xbilling.orders", False),
        (("*",), "anything", True),
        ((), "anything", False),
    ],
)
def test_patterns_are_names_or_prefixes(patterns: tuple[str, ...], name: str, expected: bool):
    assert acl.matches(patterns, name) is expected


@given(st.text(min_size=1, max_size=10).filter(lambda s: "*" not in s), st.text(max_size=10))
def test_a_prefix_pattern_matches_exactly_the_names_that_start_with_it(prefix: str, name: str):
    assert acl.matches((prefix + "*",), name) is name.startswith(prefix)
    assert acl.matches((prefix + "*",), prefix + name)
    assert acl.matches((prefix,), name) is (name == prefix)


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "must be a non-empty string"),
        (3, "must be a non-empty string"),
        ("a*b", "'a*b': '*' may only end a pattern (a prefix match)"),
        ("**", "'**': '*' may only end a pattern (a prefix match)"),
    ],
)
def test_bad_patterns_are_named(pattern: object, problem: str) -> None:
    assert acl.pattern_problem(pattern) == problem


@pytest.mark.parametrize("pattern", ["a", "a*", "*", "billing.orders-v2"])
def test_good_patterns_pass(pattern: str) -> None:
    assert acl.pattern_problem(pattern) is None


ALLOWED = [
    ("produce", {"topic": "billing.orders"}),
    ("fetch", {"topic": "billing.orders"}),
    ("fetch", {"topic": "events"}),
    ("list_offsets", {"topic": "events"}),
    ("create_topic", {"topic": "billing.new"}),
    ("delete_topic", {"topic": "billing.old"}),
    ("alter_topic", {"topic": "billing.orders"}),
    ("describe_topic", {"topic": "events"}),
    ("init_producer", {}),
    ("commit_offset", {"topic": "events", "group": "billing-etl"}),
    ("fetch_committed", {"topic": "billing.orders", "group": "billing-etl"}),
    ("group_join", {"topic": "events", "group": "billing-etl"}),
    ("group_heartbeat", {"group": "billing-etl"}),
    ("group_leave", {"group": "billing-etl"}),
    ("group_describe", {"group": "billing-etl"}),
    ("metadata", {}),
    ("metadata", {"topics": ["events", "billing.orders"]}),
    ("list_topics", {}),
    ("group_list", {}),
]

DENIED = [
    ("produce", {"topic": "events"}, "may not produce to topic 'events' (no write permission"),
    ("produce", {"topic": "payments"}, "may not produce to topic 'payments'"),
    ("fetch", {"topic": "payments"}, "may not read topic 'payments' (no read permission"),
    ("list_offsets", {"topic": "payments"}, "may not read topic 'payments'"),
    ("create_topic", {"topic": "events"}, "may not administer topic 'events'"),
    ("delete_topic", {"topic": "payments"}, "may not administer topic 'payments'"),
    ("describe_topic", {"topic": "payments"}, "has no permission on topic 'payments'"),
    ("metadata", {"topics": ["events", "payments"]}, "has no permission on topic 'payments'"),
    ("commit_offset", {"topic": "events", "group": "etl"}, "may not use consumer group 'etl'"),
    ("commit_offset", {"topic": "payments", "group": "billing-etl"}, "may not read topic"),
    ("group_join", {"topic": "payments", "group": "billing-etl"}, "may not read topic"),
    ("group_heartbeat", {"group": "etl"}, "may not use consumer group 'etl'"),
    ("group_describe", {"group": "etl"}, "may not use consumer group 'etl'"),
    ("cluster_status", {}, "may not operate the cluster (cluster = false)"),
    ("member_remove", {"node": "n3"}, "may not operate the cluster"),
    ("leader_transfer", {"topic": "billing.orders", "partition": 0, "to": "n2"}, "operate"),
    ("partition_reassign", {"topic": "billing.orders", "partition": 0, "replicas": []}, "operate"),
]


@pytest.mark.parametrize(("op", "fields"), ALLOWED)
def test_what_a_tenant_may_do(op: str, fields: dict) -> None:
    assert acl.check(BILLING, op, fields) is None


@pytest.mark.parametrize(("op", "fields", "why"), DENIED)
def test_what_a_tenant_may_not_do_and_the_message_says_why(op: str, fields: dict, why: str):
    denied = acl.check(BILLING, op, fields)
    assert denied is not None and denied.startswith("user 'billing' ") and why in denied


@pytest.mark.parametrize(("op", "fields", "why"), DENIED)
def test_a_user_granted_everything_may_do_it_all(op: str, fields: dict, why: str) -> None:
    assert acl.check(OPS, op, fields) is None


@pytest.mark.parametrize(("op", "fields"), ALLOWED)
def test_deny_by_default(op: str, fields: dict) -> None:
    allowed_to_everyone = op in ("metadata", "list_topics", "group_list") and not fields
    assert (acl.check(NOBODY, op, fields) is None) is allowed_to_everyone


def test_no_user_means_everything_is_allowed() -> None:
    for op in REQUESTS:
        assert acl.check(None, op, {}) is None


def test_listings_show_a_user_only_its_own() -> None:
    topics = ["billing.orders", "events", "payments", "billing"]
    assert acl.visible_topics(BILLING, topics) == ["billing.orders", "events"]
    assert acl.visible_topics(NOBODY, topics) == []
    assert acl.visible_topics(None, topics) == topics
    assert acl.visible_group(BILLING, "billing-etl") and not acl.visible_group(BILLING, "etl")
    assert acl.visible_group(None, "etl")


# ---------------------------------------------------------------- deny rules

# Granted everything, with a fence in each list (Kafka's DENY ACLs).
FENCED = User(
    name="fenced",
    token="tok-f",
    read=("*",),
    write=("*",),
    admin=("*",),
    groups=("*",),
    deny_read=("secret*", "hr.salaries"),
    deny_write=("events",),
    deny_admin=("billing.*",),
    deny_groups=("ops-*",),
)

# op, fields, the start of the refusal, the deny list and pattern it must name.
DENIED_BY_A_RULE = [
    ("fetch", {"topic": "secret.keys"}, "may not read topic 'secret.keys'", "deny_read", "secret*"),
    ("list_offsets", {"topic": "secret"}, "may not read topic 'secret'", "deny_read", "secret*"),
    ("fetch", {"topic": "hr.salaries"}, "may not read topic", "deny_read", "hr.salaries"),
    ("produce", {"topic": "events"}, "may not produce to topic 'events'", "deny_write", "events"),
    ("create_topic", {"topic": "billing.x"}, "may not administer topic", "deny_admin", "billing.*"),
    ("alter_topic", {"topic": "billing."}, "may not administer topic", "deny_admin", "billing.*"),
    ("delete_topic", {"topic": "billing.y"}, "may not administer", "deny_admin", "billing.*"),
    ("group_heartbeat", {"group": "ops-etl"}, "may not use consumer group", "deny_groups", "ops-*"),
    ("group_describe", {"group": "ops-"}, "may not use consumer group 'ops-'", "deny_groups",
     "ops-*"),
    ("group_delete", {"group": "ops-a"}, "may not use consumer group", "deny_groups", "ops-*"),
    ("commit_offset", {"topic": "events", "group": "ops-etl"}, "may not use consumer group",
     "deny_groups", "ops-*"),
    ("group_join", {"topic": "secret.keys", "group": "etl"}, "may not read topic", "deny_read",
     "secret*"),
    ("fetch_committed", {"topic": "secret.keys", "group": "etl"}, "may not read topic",
     "deny_read", "secret*"),
]  # fmt: skip

# The same grants let through whatever no deny pattern matches.
NOT_DENIED = [
    ("fetch", {"topic": "hr.salaries2"}),  # an exact pattern matches only that name
    ("fetch", {"topic": "events"}),  # denied writing, not reading
    ("produce", {"topic": "events2"}),
    ("produce", {"topic": "secret.keys"}),  # denied reading, not writing
    ("create_topic", {"topic": "billing"}),  # "billing.*" needs the dot
    ("group_heartbeat", {"group": "ops"}),
    ("commit_offset", {"topic": "events", "group": "etl"}),
    ("init_producer", {}),
    ("describe_topic", {"topic": "secret.keys"}),  # still writable: visible
    ("metadata", {"topics": ["events", "billing.x", "secret.keys"]}),
]


@pytest.mark.parametrize(("op", "fields", "start", "key", "pattern"), DENIED_BY_A_RULE)
def test_a_deny_beats_a_grant_and_the_refusal_names_its_pattern(
    op: str, fields: dict, start: str, key: str, pattern: str
) -> None:
    denied = acl.check(FENCED, op, fields)
    assert denied is not None and denied.startswith(f"user 'fenced' {start}"), denied
    assert f"(denied by a deny rule: {key} pattern {pattern!r})" in denied
    # The same user without its deny rules may: the deny alone refused it.
    unfenced = replace(FENCED, deny_read=(), deny_write=(), deny_admin=(), deny_groups=())
    assert acl.check(unfenced, op, fields) is None


@pytest.mark.parametrize(("op", "fields"), NOT_DENIED)
def test_what_no_deny_pattern_matches_stays_granted(op: str, fields: dict) -> None:
    assert acl.check(FENCED, op, fields) is None


def test_a_prefix_deny_matches_every_name_that_starts_with_it() -> None:
    # "secret*" is a prefix: it fences "secretary" off too (as Kafka's PREFIXED does).
    denied = acl.check(FENCED, "fetch", {"topic": "secretary"})
    assert denied is not None and "deny_read pattern 'secret*'" in denied


def test_a_star_deny_takes_the_whole_list_away() -> None:
    reader = User("r", "t", read=("logs", "metrics.*"), write=("logs",), deny_write=("*",))
    for topic in ("logs", "anything"):
        denied = acl.check(reader, "produce", {"topic": topic})
        assert denied is not None and "(denied by a deny rule: deny_write pattern '*')" in denied
    assert acl.check(reader, "fetch", {"topic": "metrics.cpu"}) is None
    # Every write grant fenced off: no producer id either.
    assert acl.check(reader, "init_producer", {}) == (
        "user 'r' may not produce (denied by a deny rule: deny_write patterns ['*'] "
        "leave no write grant)"
    )


def test_a_deny_without_a_grant_is_still_named() -> None:
    """Not granted and denied: the deny is what the refusal names (a grant added
    later would not help)."""
    user = User("u", "t", read=("a",), deny_read=("b*",))
    denied = acl.check(user, "fetch", {"topic": "b1"})
    assert denied is not None and "deny_read pattern 'b*'" in denied
    denied = acl.check(user, "fetch", {"topic": "c"})
    assert denied == "user 'u' may not read topic 'c' (no read permission on it)"


@pytest.mark.parametrize(
    ("write", "deny_write", "allowed"),
    [
        (("a*",), ("a*",), False),
        (("ab*",), ("a*",), False),  # the deny's prefix begins the grant's
        (("a", "ab"), ("a", "ab"), False),
        (("a*",), ("ab*",), True),  # only part of a* is fenced off
        (("a*",), ("a",), True),
        (("a*", "b"), ("a*",), True),  # b is still writable
        (("a",), ("b*",), True),
    ],
)
def test_init_producer_needs_a_write_grant_some_deny_leaves_open(
    write: tuple[str, ...], deny_write: tuple[str, ...], allowed: bool
) -> None:
    user = User("w", "t", write=write, deny_write=deny_write)
    assert (acl.check(user, "init_producer", {}) is None) is allowed


def test_a_topic_whose_every_grant_is_denied_is_invisible() -> None:
    # hidden: read only, and denied; half: read denied, write still granted.
    user = User("v", "t", read=("*",), write=("half",), deny_read=("hidden", "half"))
    topics = ["events", "half", "hidden", "other"]
    assert acl.visible_topics(user, topics) == ["events", "half", "other"]
    for op, fields in (
        ("describe_topic", {"topic": "hidden"}),
        ("metadata", {"topics": ["events", "hidden"]}),
    ):
        assert acl.check(user, op, fields) == (
            "user 'v' may not see topic 'hidden' "
            "(denied by a deny rule: deny_read pattern 'hidden')"
        )
    assert acl.check(user, "describe_topic", {"topic": "half"}) is None
    # Not granted at all: the message of old, naming no deny rule.
    nothing = User("n", "t", deny_read=("x",))
    assert acl.check(nothing, "describe_topic", {"topic": "x"}) == (
        "user 'n' has no permission on topic 'x'"
    )


def test_every_denied_permission_is_named_when_a_topic_is_invisible() -> None:
    user = User("v", "t", read=("s*",), write=("s*",), deny_read=("s*",), deny_write=("secret",))
    denied = acl.check(user, "describe_topic", {"topic": "secret"})
    assert denied == (
        "user 'v' may not see topic 'secret' (denied by a deny rule: "
        "deny_read pattern 's*', deny_write pattern 'secret')"
    )


def test_a_denied_group_is_left_out_of_group_lists() -> None:
    assert acl.visible_group(FENCED, "etl") and not acl.visible_group(FENCED, "ops-etl")
    assert not acl.visible_group(User("g", "t", deny_groups=("x",)), "x")


_NAMES = st.sampled_from(["a", "ab", "abc", "b", "ba", ""])
_PATTERNS = st.lists(st.sampled_from(["a", "ab", "a*", "ab*", "b*", "*"]), max_size=3).map(tuple)


@given(_PATTERNS, _PATTERNS, _PATTERNS, _PATTERNS, _NAMES)
def test_a_name_is_allowed_exactly_when_granted_and_not_denied(
    read: tuple[str, ...],
    deny_read: tuple[str, ...],
    groups: tuple[str, ...],
    deny_groups: tuple[str, ...],
    name: str,
) -> None:
    user = User("h", "t", read=read, deny_read=deny_read, groups=groups, deny_groups=deny_groups)
    readable = acl.matches(read, name) and not acl.matches(deny_read, name)
    assert (acl.check(user, "fetch", {"topic": name}) is None) is readable
    assert (acl.visible_topics(user, [name]) == [name]) is readable
    usable = acl.matches(groups, name) and not acl.matches(deny_groups, name)
    assert (acl.check(user, "group_describe", {"group": name}) is None) is usable
    assert acl.visible_group(user, name) is usable


@given(st.sampled_from(["a", "ab", "a*", "ab*", "b*", "*"]), _PATTERNS, st.lists(_NAMES))
def test_a_grant_a_deny_list_covers_has_no_name_left(
    grant: str, denies: tuple[str, ...], names: list[str]
) -> None:
    """``covers`` (init_producer's check) never claims more than the truth: a name
    the grant matches is matched by a deny too."""
    if acl.covers(denies, grant):
        for name in [*names, grant.rstrip("*"), grant.rstrip("*") + "zz"]:
            if acl.matches((grant,), name):
                assert acl.matches(denies, name)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_users_quota_is_shared_by_all_its_client_ids() -> None:
    clock = Clock()
    quotas = Quotas(QuotaConfig(requests_per_sec=2.0), clock=clock)
    capped = User(name="t", token="x", read=("*",), requests_per_sec=3.0)
    # Three requests exhaust the user's own rate (3/s, not [quotas]' 2/s)...
    for client_id in ("a", "b", "c"):
        assert quotas.check(client_id, "fetch", {}, capped) is None
    # ... whichever client id the next one gives.
    refused = quotas.check("d-renamed", "fetch", {}, capped)
    assert refused is not None and refused[0] == "requests_per_sec"
    # Without a user, buckets stay per client id, at [quotas]' rate.
    assert quotas.check("a", "fetch", {}) is None
    assert quotas.check("a", "fetch", {}) is None
    assert quotas.check("a", "fetch", {}) is not None
    assert quotas.check("b", "fetch", {}) is None
    # A client id that looks like the user's is not the user's bucket.
    assert quotas.check("user:t", "fetch", {}) is None
    clock.now += 1.0
    assert quotas.check("e", "fetch", {}, capped) is None  # refilled


def test_a_users_altered_quota_applies_to_its_bucket_at_once() -> None:
    """A reload or ``raftlog user alter`` changes a user's rate: its bucket takes the
    new one at the next request instead of keeping the old until it refills."""
    clock = Clock()
    quotas = Quotas(QuotaConfig(), clock=clock)
    slow = User(name="t", token="x", read=("*",), requests_per_sec=1.0)
    assert quotas.check("a", "fetch", {}, slow) is None
    assert quotas.check("a", "fetch", {}, slow) is not None
    fast = replace(slow, requests_per_sec=100.0)
    # The empty balance carries over, but refills at the new rate: a wait of
    # 1/100 s, not the old rate's 1 s.
    assert quotas.check("a", "fetch", {}, fast) == ("requests_per_sec", pytest.approx(0.01))
    for _ in range(50):
        clock.now += 0.01  # a refill of 1 token at 100/s each time
        assert quotas.check("a", "fetch", {}, fast) is None
    # Lowered again: the balance is capped at the new burst (1), so one more
    # request passes and the next waits.
    slower = replace(slow, requests_per_sec=1.0)
    assert quotas.check("a", "fetch", {}, slower) is None
    assert quotas.check("a", "fetch", {}, slower) is not None


def test_a_user_without_its_own_rates_gets_the_clusters() -> None:
    clock = Clock()
    quotas = Quotas(QuotaConfig(produce_bytes_per_sec=100.0), clock=clock)
    plain = User(name="p", token="x", write=("*",))
    assert quotas.check("a", "produce", {"records": b"x" * 150}, plain) is None  # into debt
    refused = quotas.check("b", "produce", {"records": b"x"}, plain)
    assert refused is not None and refused[0] == "produce_bytes_per_sec"
    generous = User(name="g", token="y", write=("*",), produce_bytes_per_sec=1000.0)
    assert quotas.check("b", "produce", {"records": b"x" * 150}, generous) is None
    assert quotas.check("b", "produce", {"records": b"x" * 150}, generous) is None


def test_a_fetch_asks_for_at_most_the_balance_and_is_refused_in_debt() -> None:
    """fetch_bytes_per_sec: a fetch's size is known only after it is read, so it is
    charged afterwards; meanwhile its max_bytes is cut to what the bucket holds."""
    clock = Clock()
    quotas = Quotas(QuotaConfig(fetch_bytes_per_sec=1000.0), clock=clock)
    consumer = User(name="c", token="x", read=("*",), fetch_bytes_per_sec=500.0)
    fields: dict[str, Any] = {"max_bytes": 1 << 20}
    assert quotas.check("a", "fetch", fields, consumer) is None
    assert fields["max_bytes"] == 500  # the user's rate, not [quotas]'
    # One batch larger than asked: into debt.
    quotas.settle_fetch(fields, {"batches": [[0, 0, 7, b"x" * 700]]})
    refused = quotas.check("a", "fetch", {}, consumer)
    assert refused is not None and refused[0] == "fetch_bytes_per_sec"
    assert refused[1] == pytest.approx(200 / 500 + 1 / 500)
    clock.now += 0.5  # +250 bytes: 50 in hand
    small: dict[str, Any] = {"max_bytes": 0}  # 0 asks for the default: still cut
    assert quotas.check("a", "fetch", small, consumer) is None and small["max_bytes"] == 50
    quotas.settle_fetch(small, None)
    # Without a user, per client id at [quotas]' rate; a smaller ask stays as asked.
    mine: dict[str, Any] = {"max_bytes": 100}
    assert quotas.check("a", "fetch", mine) is None and mine["max_bytes"] == 100
    # Other requests do not touch the fetch bucket, nor a fetch their max_bytes.
    unlimited = Quotas(QuotaConfig(), clock=clock)
    untouched: dict[str, Any] = {"max_bytes": 1 << 20}
    assert unlimited.check("a", "fetch", untouched) is None and untouched["max_bytes"] == 1 << 20
    unlimited.settle_fetch(untouched, {"batches": [[0, 0, 1, b"x"]]})
    assert unlimited.buckets == 0


def test_fetches_in_flight_share_one_balance_and_give_back_what_they_did_not_read() -> None:
    """Each admitted fetch reserves what it may read until it is answered: a
    second fetch in flight gets what the first left (at least its first batch,
    max_bytes 1), not the whole balance again. A long poll answered empty, or a
    fetch that failed, gives its reservation back and is charged nothing."""
    clock = Clock()
    quotas = Quotas(QuotaConfig(fetch_bytes_per_sec=1000.0), clock=clock)
    first: dict[str, Any] = {"max_bytes": 600}
    second: dict[str, Any] = {"max_bytes": 1 << 20}
    third: dict[str, Any] = {}
    assert quotas.check("a", "fetch", first) is None and first["max_bytes"] == 600
    assert quotas.check("a", "fetch", second) is None and second["max_bytes"] == 400
    assert quotas.check("a", "fetch", third) is None and third["max_bytes"] == 1
    quotas.settle_fetch(second, {"batches": []})  # a long poll that found nothing
    quotas.settle_fetch(third, None)  # failed (NOT_LEADER, cancelled): nothing read
    again: dict[str, Any] = {}
    assert quotas.check("a", "fetch", again) is None and again["max_bytes"] == 400
    quotas.settle_fetch(first, {"batches": [[0, 0, 5, b"x" * 500]]})
    quotas.settle_fetch(again, {"batches": [[5, 5, 4, b"x" * 400]]})
    clock.now += 0.125  # +125 bytes: 900 read of 1,125, no debt, nothing reserved
    last: dict[str, Any] = {}
    assert quotas.check("a", "fetch", last) is None and last["max_bytes"] == 225
    # A bucket with a fetch in flight is never swept as idle, even once refilled.
    clock.now += Quotas.SWEEP_INTERVAL_S
    quotas.check("b", "produce", {"records": b""})  # runs the sweep
    quotas.settle_fetch(last, {"batches": [[9, 9, 1, b"x" * 250]]})
    after: dict[str, Any] = {}
    assert quotas.check("a", "fetch", after) is None and after["max_bytes"] == 750
