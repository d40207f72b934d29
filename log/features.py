"""Log formats: which commands a cluster may write into its Raft logs.

A replica that cannot decode an entry skips it (log/partition.py
``_apply_entry``) while the others apply it: the replicas diverge. So a
command that an older node could not decode, such as one with a new field,
may only be written once every node reads it. During a rolling upgrade that
is not yet true.

Each format is a number, and each build reads every format up to its own
``LOG_FORMAT``. The cluster's format lives in the metadata state
(log/metadata.py ``SetLogFormat``), so every node agrees on it. It only
rises: the controller raises it once every registered node has said, in the
hello of its live peer link, that it reads the new one
(server/log_format.py). After that a node that reads less is refused at the
hello, with a message that says so, instead of joining and diverging.

etcd decides its cluster version the same way: the lowest version any member
reports, raised by the leader, never lowered. Kafka's ``metadata.version`` is
raised by hand instead. Here ``[cluster] max_log_format`` holds the format
back, which keeps a rollback possible until the operator lifts it.

Writers ask the metadata state, never this module, whether a format is in
force. A node whose metadata lags only writes an older format, which every
node reads.
"""

from __future__ import annotations

# Every command as it was before log formats existed.
BASELINE_LOG_FORMAT = 1
# CommitOffset carries the leader's clock (its commit time), and DeleteOffset
# may say "only if committed before": offsets committed by hand under a name
# that never formed a group expire by commit time (server/offsets_retention.py).
COMMIT_STAMPS = 2
# Topic config ``max_message_bytes`` (the largest batch a topic takes). No
# command changes form, but a node that does not know the key refuses it when
# applying an AlterTopic, and would not enforce it while leading: the key may
# only be set once every node knows it (``TOPIC_CONFIG_FORMATS``).
TOPIC_MESSAGE_LIMIT = 3
# Users kept in the metadata log (log/users.py): the SetUser and DeleteUser
# commands, which an older node could not decode.
DYNAMIC_USERS = 4
# A user kept in the metadata log may expire (``expires_at_ms``) and have a
# fetch byte quota (``fetch_bytes_per_sec``): keys that a format-4 node refuses
# when applying a SetUser, so they wait for the format (``USER_KEY_FORMATS``).
USER_EXPIRY_FETCH_QUOTA = 5
# A node's record (RegisterNode) may carry its ``peer_address``, so that nodes
# which learn of it from the metadata log (``member add``) dial the listener it
# keeps for the other nodes. A format-5 node could not decode the longer form.
NODE_PEER_ADDRESS = 6
# A user kept in the metadata log may have deny rules (``deny_read``,
# ``deny_write``, ``deny_admin``, ``deny_groups``): keys that a format-6 node
# refuses when applying a SetUser, so they wait for the format
# (``USER_KEY_FORMATS``). A node that took them while another refused would
# store other users, and authorize differently.
USER_DENY_RULES = 7

# The highest format this build reads and writes.
LOG_FORMAT = USER_DENY_RULES

FORMAT_CHANGES: dict[int, str] = {
    BASELINE_LOG_FORMAT: "every command as before log formats existed",
    COMMIT_STAMPS: "committed offsets carry their commit time (offsets retention by commit time)",
    TOPIC_MESSAGE_LIMIT: "topic config max_message_bytes",
    DYNAMIC_USERS: "users kept in the metadata log (raftlog user create)",
    USER_EXPIRY_FETCH_QUOTA: (
        "users kept in the metadata log may expire and have a fetch byte quota "
        "(raftlog user create --expires-in, --fetch-bytes-per-sec)"
    ),
    NODE_PEER_ADDRESS: "a node's record carries its peer_address (dialled by nodes that learn it)",
    USER_DENY_RULES: (
        "users kept in the metadata log may have deny rules "
        "(raftlog user create --deny-read, --deny-write, --deny-admin, --deny-group)"
    ),
}

# Topic config keys added after log formats existed, and the format from which
# a topic may set them. A key missing here is known to every format. Both the
# handler (for its message) and the metadata state machine (so that every
# replica decides alike) check it against the cluster's format.
TOPIC_CONFIG_FORMATS: dict[str, int] = {
    "max_message_bytes": TOPIC_MESSAGE_LIMIT,
}
# The same for the keys of a user record (log/users.py) added after users.
USER_KEY_FORMATS: dict[str, int] = {
    "expires_at_ms": USER_EXPIRY_FETCH_QUOTA,
    "fetch_bytes_per_sec": USER_EXPIRY_FETCH_QUOTA,
    "deny_read": USER_DENY_RULES,
    "deny_write": USER_DENY_RULES,
    "deny_admin": USER_DENY_RULES,
    "deny_groups": USER_DENY_RULES,
}


def log_format_problem(value: object) -> str | None:
    """Why ``value`` is not a log format a peer or a config may name (None if it is)."""
    if type(value) is not int or value < BASELINE_LOG_FORMAT:
        return f"a log format is an integer >= {BASELINE_LOG_FORMAT}, got {value!r}"
    return None
