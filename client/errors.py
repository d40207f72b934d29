"""Errors: stable codes at the wire, exceptions in the client.

Every error reply carries one ``ErrorCode`` and a human message. The client
turns it into the matching ``RaftlogError`` subclass, so callers can write
``except NotLeaderError`` or inspect ``err.code``.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    NOT_LEADER = "NOT_LEADER"  # carries the leader's id and address when known
    TIMEOUT = "TIMEOUT"  # outcome unknown: the request may or may not have taken effect
    UNKNOWN_TOPIC = "UNKNOWN_TOPIC"
    UNKNOWN_PARTITION = "UNKNOWN_PARTITION"
    TOPIC_EXISTS = "TOPIC_EXISTS"
    RECORD_TOO_LARGE = "RECORD_TOO_LARGE"
    INVALID_REQUEST = "INVALID_REQUEST"
    OUT_OF_RANGE = "OUT_OF_RANGE"  # carries start_offset / end_offset
    THROTTLED = "THROTTLED"  # carries retry_after_ms; nothing was appended
    UNAUTHORIZED = "UNAUTHORIZED"  # the hello's credential was refused (authentication)
    # Authenticated, but this user may not make this request (server/acl.py):
    # nothing happened, the connection stays open. Not retriable.
    FORBIDDEN = "FORBIDDEN"
    DUPLICATE_SEQUENCE = "DUPLICATE_SEQUENCE"
    OUT_OF_ORDER_SEQUENCE = "OUT_OF_ORDER_SEQUENCE"
    CORRUPT_BATCH = "CORRUPT_BATCH"  # CRC mismatch
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    NOT_AVAILABLE = "NOT_AVAILABLE"  # no quorum / shutting down; retry elsewhere
    CLUSTER_MISMATCH = "CLUSTER_MISMATCH"
    INTERNAL = "INTERNAL"
    # Consumer groups (server/group_coordinator.py): the member must join again.
    REBALANCE_IN_PROGRESS = "REBALANCE_IN_PROGRESS"  # a new generation is forming: rejoin
    UNKNOWN_MEMBER = "UNKNOWN_MEMBER"  # expired, left, or a new coordinator: join again
    # An offset commit refused by the partition (log/partition.py), nothing
    # changed: a newer generation of the group already committed there (the
    # committer's assignment is stale: stop, rejoin), or the commit carried no
    # generation for a group that commits with them. Kafka's ILLEGAL_GENERATION.
    FENCED = "FENCED"
    # A static member (group_instance_id) whose instance id a newer member of the
    # same id took over (a restart, or a second process started with the same id).
    # Kafka's FENCED_INSTANCE_ID: fatal for the consumer, which must not rejoin.
    FENCED_INSTANCE_ID = "FENCED_INSTANCE_ID"
    # raftlog group delete: the controller never knew the group (Kafka's
    # GROUP_ID_NOT_FOUND), or it still has members (Kafka's NON_EMPTY_GROUP).
    UNKNOWN_GROUP = "UNKNOWN_GROUP"
    GROUP_NOT_EMPTY = "GROUP_NOT_EMPTY"
    # raftlog user create / alter / delete (users kept in the metadata log).
    USER_EXISTS = "USER_EXISTS"
    UNKNOWN_USER = "UNKNOWN_USER"


# Codes after which the request certainly had no effect and may be retried freely.
RETRIABLE_NO_EFFECT = frozenset(
    {ErrorCode.NOT_LEADER, ErrorCode.THROTTLED, ErrorCode.NOT_AVAILABLE}
)


class RaftlogError(Exception):
    """Base of every error the client raises. ``code`` is the wire code."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.code.value)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}" if self.message else self.code.value


class NotLeaderError(RaftlogError):
    code = ErrorCode.NOT_LEADER

    @property
    def leader_address(self) -> str | None:
        value = self.details.get("leader_address")
        return value if isinstance(value, str) else None


class RequestTimeoutError(RaftlogError):
    """The outcome is unknown: the write may or may not have been committed."""

    code = ErrorCode.TIMEOUT


class UnknownTopicError(RaftlogError):
    code = ErrorCode.UNKNOWN_TOPIC


class UnknownPartitionError(RaftlogError):
    code = ErrorCode.UNKNOWN_PARTITION


class TopicExistsError(RaftlogError):
    code = ErrorCode.TOPIC_EXISTS


class RecordTooLargeError(RaftlogError):
    code = ErrorCode.RECORD_TOO_LARGE


class InvalidRequestError(RaftlogError):
    code = ErrorCode.INVALID_REQUEST


class OutOfRangeError(RaftlogError):
    code = ErrorCode.OUT_OF_RANGE


class ThrottledError(RaftlogError):
    code = ErrorCode.THROTTLED


class UnauthorizedError(RaftlogError):
    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(UnauthorizedError):
    """The user this client authenticated as lacks the permission (cluster.toml
    ``[[auth.user]]``): its message names the user, the operation and the topic
    or group. Nothing happened. An UnauthorizedError, so one ``except`` catches
    both a refused token and a refused request."""

    code = ErrorCode.FORBIDDEN


class DuplicateSequenceError(RaftlogError):
    code = ErrorCode.DUPLICATE_SEQUENCE


class OutOfOrderSequenceError(RaftlogError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE


class CorruptBatchError(RaftlogError):
    code = ErrorCode.CORRUPT_BATCH


class UnsupportedVersionError(RaftlogError):
    code = ErrorCode.UNSUPPORTED_VERSION


class NotAvailableError(RaftlogError):
    code = ErrorCode.NOT_AVAILABLE


class ClusterMismatchError(RaftlogError):
    code = ErrorCode.CLUSTER_MISMATCH


class InternalError(RaftlogError):
    code = ErrorCode.INTERNAL


class RebalanceInProgressError(RaftlogError):
    """The consumer group is rebalancing (or the member's generation is over):
    give up the assigned partitions and join again."""

    code = ErrorCode.REBALANCE_IN_PROGRESS


class UnknownMemberError(RaftlogError):
    """The coordinator does not know this group member (session expired, it left,
    or the coordinator changed): join again."""

    code = ErrorCode.UNKNOWN_MEMBER


class FencedError(RaftlogError):
    """An offset commit was refused: this consumer's group assignment is stale
    (Kafka's CommitFailedException). Nothing was committed; the records it
    covered will be delivered again, to this group's current owner of the
    partition. The group-managed Consumer has stopped handing out the
    partition's records and rejoins by itself; the application just carries on
    polling. Also raised by the Consumer, without asking the server, for a
    commit while it holds no assignment (rebalancing) or of a partition that is
    not assigned to it."""

    code = ErrorCode.FENCED


class FencedInstanceIdError(RaftlogError):
    """This consumer's ``group_instance_id`` was taken over by a newer member with
    the same instance id (Kafka's FencedInstanceIdException). Fatal: the
    Consumer has given its partitions up without committing and does not
    rejoin, or two processes would take the partitions from each other in
    turn. Two consumers configured with one instance id is the usual cause."""

    code = ErrorCode.FENCED_INSTANCE_ID


class UnknownGroupError(RaftlogError):
    """The controller knows no consumer group of this name: it never formed a
    generation (Kafka's GroupIdNotFoundException). A group that only committed
    offsets by hand (manual assignment) is not known either; delete its
    offsets with ``delete_group(..., topic=...)``."""

    code = ErrorCode.UNKNOWN_GROUP


class GroupNotEmptyError(RaftlogError):
    """The consumer group still has members, so it cannot be deleted (Kafka's
    GroupNotEmptyException): stop its consumers first. Nothing changed."""

    code = ErrorCode.GROUP_NOT_EMPTY


class UserExistsError(RaftlogError):
    """``create_user``: a user of that name is already kept in the metadata log
    (``alter_user`` changes it). Nothing changed."""

    code = ErrorCode.USER_EXISTS


class UnknownUserError(RaftlogError):
    """``alter_user`` / ``delete_user``: the metadata log keeps no user of that
    name (users of a node's cluster.toml are changed in the file). Nothing changed."""

    code = ErrorCode.UNKNOWN_USER


class ConnectionLostError(RaftlogError):
    """The connection closed before a reply: for writes the outcome is unknown."""

    code = ErrorCode.TIMEOUT


class ClusterUnreachableError(NotAvailableError):
    """No node of the cluster could be reached (connect refused or timed out).

    Raised by the client, never sent on the wire; nothing was sent, so the
    request had no effect. Subclass of NotAvailableError so generic handlers
    treat it as "retry later".
    """


class NotAppliedError(RaftlogError):
    """``wait_applied`` (``create_user(..., wait=True)`` and the like): some nodes
    had not applied the metadata log up to ``index`` by the deadline, being
    down, cut off or slow. Unlike RequestTimeoutError the outcome is known: the
    change was committed and the controller applied it; the nodes in
    ``behind`` (node id -> why) apply it when they catch up.

    Raised by the client, never sent on the wire. Its code is TIMEOUT (the wait
    timed out); do not retry the change itself (a create would be USER_EXISTS).
    """

    code = ErrorCode.TIMEOUT

    def __init__(self, index: int, behind: dict[str, str], waited_s: float) -> None:
        self.index = index
        self.behind = dict(sorted(behind.items()))
        nodes = "; ".join(f"{node} ({why})" for node, why in self.behind.items())
        super().__init__(
            f"committed at metadata index {index}, but not applied within {waited_s:g}s "
            f"by {', '.join(self.behind)}: {nodes}"
        )


class TLSError(UnauthorizedError):
    """TLS failed: the node's certificate did not verify, the node refused ours,
    or the TLS material could not be loaded.

    Raised by the client, never sent on the wire; no request was sent, and
    retrying with the same settings fails the same way, so the client does
    not retry it. An UnauthorizedError: in both directions the failure is one
    of authentication.
    """


_BY_CODE: dict[ErrorCode, type[RaftlogError]] = {
    cls.code: cls
    for cls in (
        NotLeaderError,
        RequestTimeoutError,
        UnknownTopicError,
        UnknownPartitionError,
        TopicExistsError,
        RecordTooLargeError,
        InvalidRequestError,
        OutOfRangeError,
        ThrottledError,
        UnauthorizedError,
        ForbiddenError,
        DuplicateSequenceError,
        OutOfOrderSequenceError,
        CorruptBatchError,
        UnsupportedVersionError,
        NotAvailableError,
        ClusterMismatchError,
        InternalError,
        RebalanceInProgressError,
        UnknownMemberError,
        FencedError,
        FencedInstanceIdError,
        UnknownGroupError,
        UserExistsError,
        UnknownUserError,
        GroupNotEmptyError,
    )
}


def error_from_reply(code: str, message: str, details: dict[str, object]) -> RaftlogError:
    """Build the exception for an error reply; unknown codes become InternalError."""
    try:
        cls = _BY_CODE[ErrorCode(code)]
    except ValueError:
        return InternalError(f"{code}: {message}", **details)
    return cls(message, **details)
