"""Option helpers shared by every ``raftlog`` command that talks to a cluster.

* ``cluster_options``: adds ``--config PATH`` (default ``./cluster.toml``),
  ``--bootstrap HOST:PORT[,HOST:PORT]`` and ``--tls-ca`` / ``--tls-cert`` /
  ``--tls-key`` / ``--tls-crl`` to a click command; the command then receives ``config`` and
  ``bootstrap`` keyword arguments, and ``client_tls()`` returns the TLS
  settings to connect with (None: plaintext).
* TLS: each ``--tls-*`` flag wins; the rest comes from the ``[tls]`` table of
  the cluster.toml the command reads (``--config``, or ``./cluster.toml``
  without ``--bootstrap``): its ``ca_file``, its ``cert_file`` /
  ``key_file`` as the client certificate (for ``client_auth = true``), and
  its ``crl_file`` to check the nodes' certificates.
* Credential: ``--token`` (or ``RAFTLOG_TOKEN``, which keeps it out of
  ``ps``) is sent in the hello; ``client_credential()`` returns it. Without
  one, a command that reads a cluster.toml takes its ``[auth]``: the first
  ``client_tokens`` entry, else the first ``[[auth.user]]`` with ``cluster =
  true`` (whoever holds the file is its operator, as with ``[tls]``).
* ``bootstrap_addresses(config, bootstrap)``: the node addresses to dial;
  ``config_nodes(config, bootstrap)``: the file's node ids and addresses.
* ``run_client(fn)``: runs ``fn`` (sync or async, no arguments) and turns
  client errors into the exit codes scripts rely on:

  ====  =====================================================
  0     ok
  1     the cluster answered with an error (code on stderr)
  2     usage error (click's own code, also a bad config file)
  3     the cluster cannot be reached
  4     the change was made, but not every node applied it
        within --timeout (``raftlog user ... --wait``)
  ====  =====================================================

This module only reads cluster.toml's ``[[node]]`` addresses (with tomllib),
so it does not depend on the server's config loader and the data-path
commands work from any machine that has the file or a ``--bootstrap`` list.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import trio
from raftlog.client.errors import (
    ClusterUnreachableError,
    ConnectionLostError,
    RaftlogError,
)
from raftlog.client.tls import TLSConfig

T = TypeVar("T")

DEFAULT_CONFIG = "cluster.toml"

EXIT_OK = 0
EXIT_CLUSTER_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
# A change committed (do not run it again) that some node had not applied in time.
EXIT_NOT_APPLIED = 4


_TLS_META = "raftlog.client_tls"
_CREDENTIAL_META = "raftlog.client_credential"
TOKEN_ENV = "RAFTLOG_TOKEN"


def cluster_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: ``--config`` and ``--bootstrap`` options (passed as kwargs),
    and the ``--tls-*`` options (resolved for ``client_tls()``)."""

    command = fn

    @functools.wraps(command)
    def with_tls(
        *args: Any,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_crl: Path | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> Any:
        config, bootstrap = kwargs.get("config"), kwargs.get("bootstrap")
        tls = resolve_tls(config, bootstrap, tls_ca, tls_cert, tls_key, tls_crl)
        meta = click.get_current_context().meta
        meta[_TLS_META] = tls
        meta[_CREDENTIAL_META] = resolve_credential(config, bootstrap, token)
        return command(*args, **kwargs)

    # functools.wraps shares fn's list of click parameters: these join it.
    fn = with_tls
    for flag, name, text in (
        (
            "--tls-crl",
            "tls_crl",
            "Refuse nodes whose certificate these CRLs (PEM) revoke. Default: [tls] crl_file.",
        ),
        ("--tls-key", "tls_key", "Private key of --tls-cert (PEM), unless the cert file holds it."),
        (
            "--tls-cert",
            "tls_cert",
            "Client certificate (PEM) for nodes with [tls] client_auth = true.",
        ),
        (
            "--tls-ca",
            "tls_ca",
            "Connect with TLS, trusting this CA (PEM). Default: [tls] ca_file of --config.",
        ),
    ):
        fn = click.option(
            flag,
            name,
            default=None,
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help=text,
        )(fn)
    fn = click.option(
        "--token",
        "token",
        default=None,
        envvar=TOKEN_ENV,
        show_envvar=True,
        metavar="TOKEN",
        help="Client credential for clusters with [auth] (default: from --config's [auth]).",
    )(fn)
    fn = click.option(
        "--bootstrap",
        "bootstrap",
        default=None,
        metavar="HOST:PORT[,HOST:PORT]",
        help="Node addresses to contact (instead of reading --config).",
    )(fn)
    fn = click.option(
        "--config",
        "config",
        default=None,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"cluster.toml to read the [[node]] addresses from (default ./{DEFAULT_CONFIG}).",
    )(fn)
    return fn


def client_tls() -> TLSConfig | None:
    """The TLS settings of the running command (see ``cluster_options``); None: plaintext."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(_TLS_META)


def client_credential() -> str | None:
    """The running command's hello credential (see ``cluster_options``); None: none."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(_CREDENTIAL_META)


def resolve_credential(
    config: str | Path | None, bootstrap: str | None, token: str | None
) -> str | None:
    """``--token`` / RAFTLOG_TOKEN, else the operator's token from the file the
    command reads (``--config``, else ./cluster.toml without ``--bootstrap``)."""
    if token:
        return token
    if config is None and bootstrap:
        return None
    return config_credential(Path(config) if config is not None else Path(DEFAULT_CONFIG))


def config_credential(path: Path) -> str | None:
    """The first ``[auth] client_tokens`` entry (full access), else the token of
    the first ``[[auth.user]]`` allowed to operate the cluster; None if neither.
    An unreadable file is left to ``bootstrap_addresses`` to report."""
    try:
        with path.open("rb") as fh:
            auth = tomllib.load(fh).get("auth")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(auth, dict):
        return None
    tokens = auth.get("client_tokens")
    if isinstance(tokens, list) and tokens and isinstance(tokens[0], str):
        return tokens[0]
    users = auth.get("user")
    for user in users if isinstance(users, list) else ():
        if isinstance(user, dict) and user.get("cluster") is True:
            token = user.get("token")
            if isinstance(token, str) and token:
                return token
    return None


def resolve_tls(
    config: str | Path | None,
    bootstrap: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    crl: Path | None = None,
) -> TLSConfig | None:
    """The TLS settings from the flags, over the [tls] table of the file the
    command reads its addresses from (``--config``, else ./cluster.toml when
    there is no ``--bootstrap``). Errors are click.UsageError (exit code 2)."""
    if key is not None and cert is None:
        raise click.BadParameter("needs --tls-cert too", param_hint="--tls-key")
    table: dict[str, Path] = {}
    if config is not None or not bootstrap:
        table = _tls_table(Path(config) if config is not None else Path(DEFAULT_CONFIG))
    ca = ca or table.get("ca_file")
    if cert is None:
        cert, key = table.get("cert_file"), table.get("key_file")
    if ca is None and cert is None:
        return None
    crl = crl or table.get("crl_file")
    return TLSConfig(ca_file=ca, cert_file=cert, key_file=key, crl_file=crl)


def _tls_table(path: Path) -> dict[str, Path]:
    """``[tls]``'s file paths (relative ones against the file's folder); {} if none.

    A missing or unreadable file is left to ``bootstrap_addresses`` to report.
    """
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    table = doc.get("tls")
    if not isinstance(table, dict):
        return {}
    out: dict[str, Path] = {}
    for name in ("ca_file", "cert_file", "key_file", "crl_file"):
        value = table.get(name)
        if isinstance(value, str) and value:
            out[name] = path.resolve().parent / value  # an absolute value stays as it is
    return out


def parse_address(text: str) -> str:
    """Validate one ``HOST:PORT``; raise click.BadParameter when it is not one."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{text!r} is not HOST:PORT", param_hint="--bootstrap")
    return f"{host}:{int(port)}"


def bootstrap_addresses(config: str | Path | None, bootstrap: str | None) -> list[str]:
    """The addresses to dial: ``--bootstrap`` if given, else cluster.toml's nodes.

    Errors are click.UsageError subclasses, i.e. exit code 2.
    """
    if bootstrap:
        addresses = [parse_address(part) for part in bootstrap.split(",") if part.strip()]
        if not addresses:
            raise click.BadParameter("no address given", param_hint="--bootstrap")
        return addresses
    return [address for _, address in _file_nodes(config)]


def config_nodes(config: str | Path | None, bootstrap: str | None) -> dict[str, str] | None:
    """Node id -> address of the cluster.toml the command reads its addresses
    from; None with ``--bootstrap`` (the cluster's own list of nodes is then
    the one to use). Errors as ``bootstrap_addresses``."""
    if bootstrap:
        return None
    return {node_id or address: address for node_id, address in _file_nodes(config)}


def _file_nodes(config: str | Path | None) -> list[tuple[str | None, str]]:
    """``(id, address)`` of each ``[[node]]`` of ``--config`` (else the default
    file), the id None where it is not a string; click.UsageError (exit 2) for a
    file that is missing or unreadable, or a node without a HOST:PORT address."""
    path = Path(config) if config is not None else Path(DEFAULT_CONFIG)
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise click.UsageError(
            f"{path}: no such file (pass --config PATH or --bootstrap HOST:PORT)"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.UsageError(f"{path}: cannot read: {exc}") from None
    nodes = doc.get("node")
    if not isinstance(nodes, list) or not nodes:
        raise click.UsageError(f"{path}: no [[node]] entries")
    out: list[tuple[str | None, str]] = []
    for i, node in enumerate(nodes):
        address = node.get("address") if isinstance(node, dict) else None
        if not isinstance(address, str):
            raise click.UsageError(f"{path}: node[{i}].address is missing")
        try:
            parsed = parse_address(address)
        except click.BadParameter:
            raise click.UsageError(
                f"{path}: node[{i}].address {address!r} is not HOST:PORT"
            ) from None
        node_id = node.get("id")
        out.append((node_id if isinstance(node_id, str) and node_id else None, parsed))
    return out


def metrics_addresses(config: str | Path | None, bootstrap: str | None) -> dict[str, str]:
    """Node id -> ``metrics_address`` from cluster.toml: ``--config`` if given, else
    the default file unless ``--bootstrap`` replaces it. Best effort (``{}`` when
    unreadable): ``bootstrap_addresses`` reports a bad file; the bench only adds
    the nodes' CPU to its report from these."""
    if config is None and bootstrap:
        return {}
    path = Path(config) if config is not None else Path(DEFAULT_CONFIG)
    try:
        with path.open("rb") as fh:
            nodes = tomllib.load(fh).get("node")
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    out: dict[str, str] = {}
    for node in nodes if isinstance(nodes, list) else []:
        if not isinstance(node, dict):
            continue
        node_id, address = node.get("id"), node.get("metrics_address")
        if isinstance(node_id, str) and isinstance(address, str):
            out[node_id] = address
    return out


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception that escaped a client command."""
    if isinstance(exc, ClusterUnreachableError | ConnectionLostError | OSError):
        return EXIT_UNREACHABLE
    if isinstance(exc, RaftlogError):
        return EXIT_CLUSTER_ERROR
    return EXIT_CLUSTER_ERROR


def run_client(fn: Callable[[], T] | Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` and map client errors to exit codes (see module docstring).

    ``fn`` may be a plain function (e.g. using the blocking ``Client``) or an
    async function, which is run with ``trio.run``. click's own exceptions
    (usage errors, ``Exit``, ``Abort``) pass through untouched.
    """
    try:
        try:
            if inspect.iscoroutinefunction(fn):
                return trio.run(fn)  # type: ignore[arg-type]
            return fn()  # type: ignore[return-value]
        except BaseExceptionGroup as group:  # trio nurseries may wrap the real error
            leaf = _first_leaf(group)
            if leaf is None:
                raise
            raise leaf from None
    except click.exceptions.ClickException:
        raise
    except click.exceptions.Exit:
        raise
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    except BrokenPipeError:
        # stdout closed by the reader (`raftlog consume t | head`): not a cluster
        # problem. Point stdout at /dev/null so the final flush stays quiet.
        if sys.stdout is sys.__stdout__:  # the process's real stdout, not a capture
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise click.exceptions.Exit(0) from None
    except (RaftlogError, OSError) as exc:
        code = exit_code_for(exc)
        label = "cannot reach the cluster" if code == EXIT_UNREACHABLE else "error"
        click.echo(f"{label}: {exc}", err=True)
        sys.stderr.flush()
        raise click.exceptions.Exit(code) from None


def _first_leaf(group: BaseExceptionGroup) -> BaseException | None:
    """The first RaftlogError/OSError/click error inside a (nested) exception group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_leaf(exc)
            if found is not None:
                return found
        elif isinstance(exc, RaftlogError | OSError | click.ClickException | click.exceptions.Exit):
            return exc  # a command's own click error, raised inside the client's nursery
    return None


def client_command(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator for a command body that may raise client errors: wraps it in run_client."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return run_client(lambda: fn(*args, **kwargs))

    return wrapper
