"""``raftlog user``: create, alter, delete and list the users kept in the
cluster's metadata log (log/users.py), as Kafka's ``kafka-configs
--alter --add-config SCRAM-...`` keeps SCRAM users in KRaft.

    raftlog user create NAME [--read P]... [--write P]... [--admin P]... [--group P]...
                             [--deny-read P]... [--deny-write P]... [--deny-admin P]...
                             [--deny-group P]...
                             [--cluster] [--tls-name N]... [--requests-per-sec R]
                             [--produce-bytes-per-sec R] [--fetch-bytes-per-sec R]
                             [--max-connections N]
                             [--token-stdin | --no-token]
                             [--expires-in DURATION | --expires-at DATETIME]
                             [--wait | --no-wait]
    raftlog user alter NAME [the same grants, deny rules and quotas]
                            [--cluster/--no-cluster]
                            [--clear GRANT|DENY]... [--remove-quota KEY]...
                            [--rotate-token | --token-stdin]
                            [--expires-in DURATION | --expires-at DATETIME | --no-expiry]
                            [--wait | --no-wait]
    raftlog user delete NAME [--wait | --no-wait]
    raftlog user list [--json]

A ``--deny-*`` pattern takes away what the grants give, whatever they say
(Kafka's DENY ACLs): ``--read '*' --deny-read 'billing.*'`` reads every topic
but billing.*. Deny rules need the cluster at log format 7 (log/features.py).

Only a cluster that authenticates clients (cluster.toml ``[auth]`` with a
``peer_token`` and ``client_tokens`` or ``[[auth.user]]``) keeps users, and
only a caller with ``cluster = true`` (or a ``client_tokens`` token) may
manage them: ``--token`` / ``RAFTLOG_TOKEN`` is the caller's credential, never
the new user's. A new user's token is generated here (``create``, ``alter
--rotate-token``) and printed once on stdout as ``token: <token>``; the
cluster keeps only its SHA-256 and cannot show it again.

Waiting. The cluster answers a change once its controller (the metadata
group's leader) applied it; the other nodes apply it from the log a heartbeat
or so later, and until then authenticate by the old users. So by default
(``--wait``) create, alter and delete then poll every node (those of
``--config``, or with ``--bootstrap`` those the cluster reports) until each
has applied the change's metadata log index, for ``--timeout`` at most: a
script may use a new token on any node, or count on a deleted one being
refused everywhere, once the command returned 0. A node that does not get
there in time (down, cut off) makes the command exit 4, naming it; the change
itself is made (do not run it again: a create would be USER_EXISTS), and
the node applies it when it catches up. What the command prints on stdout is
the same either way (a generated token first of all); the wait reports on
stderr. ``--no-wait`` returns once the controller applied the change.

Exit codes (see cli_common): 0 ok, 1 error reply from the cluster (e.g.
USER_EXISTS, UNKNOWN_USER, FORBIDDEN), 2 usage error, 3 cluster unreachable,
4 made, but not applied by every node within --timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import RaftlogError
from raftlog.client.users import QUOTA_KEYS, change_index, generate_token

from .cli_common import EXIT_NOT_APPLIED, cluster_options, config_nodes, run_client
from .cli_data import _TIMEOUT_OPTION, _client, _echo_json
from .cli_time import DateTime, Duration, now_ms

_WAIT_OPTION = click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Return once every node applied the change (the nodes of --config, or those the "
    "cluster reports with --bootstrap), within --timeout; exit 4 naming those that did "
    "not (the change is made all the same). --no-wait: once the controller applied it.",
)


async def _await_everywhere(
    client: AsyncClient, change: dict[str, Any], nodes: dict[str, str] | None, budget_s: float
) -> None:
    """``--wait``: until every node applied ``change`` (its ``metadata_index``),
    reported on stderr; exit 4 if some node did not within ``budget_s``."""
    try:
        index = change_index(change)
        applied = await client.wait_applied(index, nodes=nodes, budget_s=budget_s)
    except RaftlogError as exc:
        click.echo(
            f"not applied everywhere: {exc.message or exc}\n"
            "The change itself is made: do not run the command again. A node named "
            "applies it once it catches up; until then it may go by the old users.",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_NOT_APPLIED) from None
    click.echo(f"applied by every node ({', '.join(applied)}) at metadata index {index}", err=True)


async def _announce(
    client: AsyncClient,
    done: str,
    change: dict[str, Any],
    *,
    expiry: str | None = None,
    token: str | None = None,
    wait: bool,
    nodes: dict[str, str] | None,
    budget_s: float,
) -> None:
    """Print what a change did (``done``, the expiry, a new token), then, with
    ``wait``, wait for ``nodes`` (None: those the cluster reports) to apply it.
    Printed before the wait: the token is needed whatever the wait finds."""
    click.echo(done)
    if expiry is not None:
        click.echo(f"expires at {expiry}")
    if token is not None:
        _echo_token(token)
    if wait:
        await _await_everywhere(client, change, nodes, budget_s)


def _grant_options(*, altering: bool) -> Any:
    """``--read``/``--write``/``--admin``/``--group``, their ``--deny-*``,
    ``--tls-name`` and the quotas."""
    replaces = " Replaces the user's whole list of them when given." if altering else ""
    options = [
        click.option("--read", "read", multiple=True, metavar="PATTERN",
                     help=f"Topics the user may fetch from; repeatable ('*' ends a prefix)."
                     f"{replaces}"),
        click.option("--write", "write", multiple=True, metavar="PATTERN",
                     help=f"Topics the user may produce to; repeatable.{replaces}"),
        click.option("--admin", "admin", multiple=True, metavar="PATTERN",
                     help=f"Topics the user may create, alter and delete; repeatable.{replaces}"),
        click.option("--group", "groups", multiple=True, metavar="PATTERN",
                     help=f"Consumer groups the user may use; repeatable.{replaces}"),
        click.option("--deny-read", "deny_read", multiple=True, metavar="PATTERN",
                     help="Topics the user may not fetch from, whatever --read grants; "
                     f"repeatable.{replaces}"),
        click.option("--deny-write", "deny_write", multiple=True, metavar="PATTERN",
                     help="Topics the user may not produce to, whatever --write grants; "
                     f"repeatable.{replaces}"),
        click.option("--deny-admin", "deny_admin", multiple=True, metavar="PATTERN",
                     help="Topics the user may not administer, whatever --admin grants; "
                     f"repeatable.{replaces}"),
        click.option("--deny-group", "deny_groups", multiple=True, metavar="PATTERN",
                     help="Consumer groups the user may not use, whatever --group grants; "
                     f"repeatable.{replaces}"),
        click.option("--tls-name", "tls_names", multiple=True, metavar="NAME",
                     help="A name of the user's TLS client certificate (DNS or email SAN, or "
                     f"subject CN): a client sending no token with it is this user.{replaces}"),
        click.option("--requests-per-sec", type=click.FloatRange(min=0, min_open=True),
                     default=None, help="At most this many requests a second, all the "
                     "user's connections together."),
        click.option("--produce-bytes-per-sec", type=click.FloatRange(min=0, min_open=True),
                     default=None, help="At most this many produced bytes a second."),
        click.option("--fetch-bytes-per-sec", type=click.FloatRange(min=0, min_open=True),
                     default=None, help="At most this many fetched record bytes a second."),
        click.option("--max-connections", type=click.IntRange(min=1), default=None,
                     help="At most this many open connections on each node."),
    ]  # fmt: skip

    return _stacked(options)


def _stacked(options: list[Any]) -> Any:
    """One decorator applying ``options`` in their order (as --help lists them)."""

    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _expiry_options(*, altering: bool) -> Any:
    """``--expires-in`` / ``--expires-at`` (and, altering, ``--no-expiry``)."""
    options = [
        click.option("--expires-in", type=Duration(), default=None, metavar="DURATION",
                     help="The user's token and certificate names stop working this long "
                     "from now (90m, 12h, 30d, PT1H), on open connections too."),
        click.option("--expires-at", type=DateTime(), default=None, metavar="DATETIME",
                     help="The same at an ISO 8601 time (2027-01-01T00:00:00Z; without an "
                     "offset, local time)."
                     + (" One already past suspends the user at once." if altering else "")),
    ]  # fmt: skip
    if altering:
        options.append(
            click.option("--no-expiry", is_flag=True, help="The user never expires (again).")
        )

    return _stacked(options)


def _expires_at_ms(expires_in: int | None, expires_at: int | None) -> int | None:
    """The expiry the options give (ms since the epoch), or None."""
    if expires_in is not None and expires_at is not None:
        raise click.UsageError("give at most one of --expires-in and --expires-at")
    if expires_in is not None:
        if expires_in <= 0:
            raise click.UsageError("--expires-in must be longer than 0")
        return now_ms() + expires_in
    return expires_at


def _read_token_stdin() -> str:
    """``--token-stdin``: the first line of stdin, stripped (a usage error if empty)."""
    token = sys.stdin.readline().strip()
    if not token:
        raise click.UsageError("--token-stdin: the first line of stdin is empty")
    return token


def _echo_token(token: str) -> None:
    """The token on stdout, once, in a line a script can pick out (``token: ...``)."""
    click.echo(f"token: {token}")
    click.echo(
        "store the token now: the cluster keeps only its SHA-256 and cannot show it again",
        err=True,
    )


@click.group("user")
def user_cli() -> None:
    """Users kept in the metadata log: create, alter (grants, quotas, token), delete, list."""


@user_cli.command("create")
@click.argument("name")
@_grant_options(altering=False)
@click.option("--cluster", "cluster_grant", is_flag=True,
              help="May operate the cluster (members, leaders, reloads, users).")  # fmt: skip
@click.option("--token-stdin", is_flag=True,
              help="Take the user's token from the first line of stdin instead of "
              "generating one (nothing is printed of it).")  # fmt: skip
@click.option("--no-token", is_flag=True,
              help="No token: the user is known only by its --tls-name(s).")  # fmt: skip
@_expiry_options(altering=False)
@_WAIT_OPTION
@cluster_options
@_TIMEOUT_OPTION
def user_create(
    name: str,
    read: tuple[str, ...],
    write: tuple[str, ...],
    admin: tuple[str, ...],
    groups: tuple[str, ...],
    deny_read: tuple[str, ...],
    deny_write: tuple[str, ...],
    deny_admin: tuple[str, ...],
    deny_groups: tuple[str, ...],
    tls_names: tuple[str, ...],
    requests_per_sec: float | None,
    produce_bytes_per_sec: float | None,
    fetch_bytes_per_sec: float | None,
    max_connections: int | None,
    cluster_grant: bool,
    token_stdin: bool,
    no_token: bool,
    expires_in: int | None,
    expires_at: int | None,
    wait: bool,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Create user NAME with the grants and deny rules given (none by default).

    Prints "created user NAME", then, unless --token-stdin or --no-token, a
    line "token: TOKEN" with the new user's generated token: the only time it
    is shown (capture it with e.g. `sed -n 's/^token: //p'`). The user's
    clients send it as their credential (RAFTLOG_TOKEN for this CLI).
    This command's own --token / RAFTLOG_TOKEN is the caller's credential
    (a user with cluster = true), not the new user's.
    """
    if token_stdin and no_token:
        raise click.UsageError("give at most one of --token-stdin and --no-token")
    if no_token and not tls_names:
        raise click.UsageError(
            "--no-token: a user without a token needs at least one --tls-name "
            "(the names of its TLS client certificate)"
        )
    expires_at_ms = _expires_at_ms(expires_in, expires_at)
    generated = not (token_stdin or no_token)
    token = None if no_token else _read_token_stdin() if token_stdin else generate_token()
    client = _client(config, bootstrap, timeout)
    nodes = config_nodes(config, bootstrap)

    async def main() -> None:
        async with client:
            created = await client.create_user(
                name, token=token, read=read, write=write, admin=admin, groups=groups,
                deny_read=deny_read, deny_write=deny_write, deny_admin=deny_admin,
                deny_groups=deny_groups,
                cluster=cluster_grant, tls_names=tls_names, requests_per_sec=requests_per_sec,
                produce_bytes_per_sec=produce_bytes_per_sec,
                fetch_bytes_per_sec=fetch_bytes_per_sec, max_connections=max_connections,
                expires_at_ms=expires_at_ms,
            )  # fmt: skip
            await _announce(
                client, f"created user {name}", created,
                expiry=created.get("expires_at"), token=token if generated else None,
                wait=wait, nodes=nodes, budget_s=timeout,
            )  # fmt: skip

    run_client(main)


@user_cli.command("alter")
@click.argument("name")
@_grant_options(altering=True)
@click.option("--cluster/--no-cluster", "cluster_grant", default=None,
              help="Allow / forbid operating the cluster (default: unchanged).")  # fmt: skip
@click.option("--clear", "clear", multiple=True,
              type=click.Choice(["read", "write", "admin", "group", "deny-read", "deny-write",
                                 "deny-admin", "deny-group", "tls-name"]),
              help="Empty that list of the user's (no grant, or no deny rule, left); "
              "repeatable.")  # fmt: skip
@click.option("--remove-quota", "remove_quotas", multiple=True,
              type=click.Choice(QUOTA_KEYS),
              help="Drop that quota (no longer limited by it); repeatable.")  # fmt: skip
@click.option("--rotate-token", is_flag=True,
              help="Generate a new token and print it (\"token: TOKEN\"); the old one stops "
              "working at once, on open connections too.")  # fmt: skip
@click.option("--token-stdin", is_flag=True,
              help="Replace the token with the first line of stdin (the old one stops "
              "working at once).")  # fmt: skip
@_expiry_options(altering=True)
@_WAIT_OPTION
@cluster_options
@_TIMEOUT_OPTION
def user_alter(
    name: str,
    read: tuple[str, ...],
    write: tuple[str, ...],
    admin: tuple[str, ...],
    groups: tuple[str, ...],
    deny_read: tuple[str, ...],
    deny_write: tuple[str, ...],
    deny_admin: tuple[str, ...],
    deny_groups: tuple[str, ...],
    tls_names: tuple[str, ...],
    requests_per_sec: float | None,
    produce_bytes_per_sec: float | None,
    fetch_bytes_per_sec: float | None,
    max_connections: int | None,
    cluster_grant: bool | None,
    clear: tuple[str, ...],
    remove_quotas: tuple[str, ...],
    rotate_token: bool,
    token_stdin: bool,
    expires_in: int | None,
    expires_at: int | None,
    no_expiry: bool,
    wait: bool,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Change user NAME: only what is given changes.

    Each grant or deny option given replaces that whole list (--read a --read b:
    the user may read a and b, nothing else; --deny-read x: x and nothing else
    is denied). Prints "altered user NAME", and with
    --rotate-token the new token on a line "token: TOKEN", shown only this once.
    """
    if rotate_token and token_stdin:
        raise click.UsageError("give at most one of --rotate-token and --token-stdin")
    # By the --clear name, which is each list's option name (--clear deny-read, --deny-read).
    lists: dict[str, tuple[str, ...] | None] = {
        "read": read, "write": write, "admin": admin, "group": groups,
        "deny-read": deny_read, "deny-write": deny_write, "deny-admin": deny_admin,
        "deny-group": deny_groups, "tls-name": tls_names,
    }  # fmt: skip
    for option in clear:
        if lists[option]:
            raise click.UsageError(f"--clear {option} and --{option}: give one of them")
    changed = {
        key: (() if key in clear else values) if (values or key in clear) else None
        for key, values in lists.items()
    }
    quotas = {
        "requests_per_sec": requests_per_sec,
        "produce_bytes_per_sec": produce_bytes_per_sec,
        "fetch_bytes_per_sec": fetch_bytes_per_sec,
        "max_connections": max_connections,
    }
    for key in remove_quotas:
        if quotas[key] is not None:
            flag = "--" + key.replace("_", "-")
            raise click.UsageError(f"--remove-quota {key} and {flag}: give one of them")
    expires_at_ms = _expires_at_ms(expires_in, expires_at)
    if no_expiry and expires_at_ms is not None:
        raise click.UsageError("--no-expiry and --expires-in/--expires-at: give one of them")
    remove = (*remove_quotas, *(["expires_at_ms"] if no_expiry else []))
    given = [
        *(v for v in changed.values() if v is not None),
        *(v for v in quotas.values() if v is not None),
        *([expires_at_ms] if expires_at_ms is not None else []),
    ]
    if not (given or remove or rotate_token or token_stdin or cluster_grant is not None):
        raise click.UsageError(
            "nothing to alter: give a grant (--read, --write, --admin, --group, --tls-name, "
            "--clear), a deny rule (--deny-read, --deny-write, --deny-admin, --deny-group), "
            "--cluster/--no-cluster, a quota or --remove-quota, an expiry "
            "(--expires-in, --expires-at, --no-expiry), or a new token (--rotate-token, "
            "--token-stdin)"
        )
    token = generate_token() if rotate_token else _read_token_stdin() if token_stdin else None
    client = _client(config, bootstrap, timeout)
    nodes = config_nodes(config, bootstrap)

    async def main() -> None:
        async with client:
            altered = await client.alter_user(
                name, token=token, read=changed["read"], write=changed["write"],
                admin=changed["admin"], groups=changed["group"],
                deny_read=changed["deny-read"], deny_write=changed["deny-write"],
                deny_admin=changed["deny-admin"], deny_groups=changed["deny-group"],
                cluster=cluster_grant,
                tls_names=changed["tls-name"], remove=remove, expires_at_ms=expires_at_ms,
                **quotas,
            )  # fmt: skip
            expiry_changed = expires_at_ms is not None or no_expiry
            await _announce(
                client, f"altered user {name}", altered,
                expiry=altered.get("expires_at", "never") if expiry_changed else None,
                token=token if rotate_token else None,
                wait=wait, nodes=nodes, budget_s=timeout,
            )  # fmt: skip

    run_client(main)


@user_cli.command("delete")
@click.argument("name")
@_WAIT_OPTION
@cluster_options
@_TIMEOUT_OPTION
def user_delete(
    name: str, wait: bool, config: Path | None, bootstrap: str | None, timeout: float
) -> None:
    """Delete user NAME; its open connections are refused from their next request."""
    client = _client(config, bootstrap, timeout)
    nodes = config_nodes(config, bootstrap)

    async def main() -> None:
        async with client:
            index = await client.delete_user(name)
            await _announce(
                client, f"deleted user {name}", {"metadata_index": index},
                wait=wait, nodes=nodes, budget_s=timeout,
            )  # fmt: skip

    run_client(main)


def _patterns(values: list[str] | None) -> str:
    return ",".join(values or ()) or "-"


def _denies(user: dict[str, Any]) -> str:
    """The DENY column: each deny list that has patterns, as ``read:a*,b;groups:g*``
    (one column for the four: most users have none, and the table stays narrow)."""
    lists = [
        f"{key.removeprefix('deny_')}:{_patterns(user.get(key))}"
        for key in ("deny_read", "deny_write", "deny_admin", "deny_groups")
        if user.get(key)
    ]
    return ";".join(lists) or "-"


@user_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
@cluster_options
@_TIMEOUT_OPTION
def user_list(as_json: bool, config: Path | None, bootstrap: str | None, timeout: float) -> None:
    """Every user: those of the metadata log (SOURCE metadata) and the answering
    node's cluster.toml ones (file). No tokens are shown, only whether there is one.
    DENY: the user's deny rules, by list (read:billing.*;groups:tmp-*).
    "(shadowed)": a metadata user whose name cluster.toml also has (the file's wins)."""
    client = _client(config, bootstrap, timeout)

    async def main() -> list[dict[str, Any]]:
        async with client:
            return await client.list_users()

    users = run_client(main)
    if as_json:
        _echo_json(users)
        return
    header = (
        "NAME", "SOURCE", "TOKEN", "CLUSTER", "READ", "WRITE", "ADMIN", "GROUPS", "DENY",
        "EXPIRES",
    )  # fmt: skip
    rows = [
        (
            u["name"],
            u["source"],
            "yes" if u.get("token") else "no",
            "yes" if u.get("cluster") else "no",
            _patterns(u.get("read")),
            _patterns(u.get("write")),
            _patterns(u.get("admin")),
            _patterns(u.get("groups")),
            _denies(u),
            u.get("expires_at", "never"),
            " ".join(
                mark
                for mark, present in (
                    ("(expired)", u.get("expired")),
                    ("(shadowed)", u.get("shadowed")),
                )
                if present
            ),
        )
        for u in users
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [(*header, ""), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())
