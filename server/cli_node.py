"""``raftlog node start``, ``raftlog cluster up`` and ``raftlog cluster status``.

Exit codes: 0 ok; 1 runtime failure (a port taken, a node died, no leader in
time); 2 the configuration or data directory is unusable (message on stderr,
never a traceback); 3 no node could be reached (``cluster status``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import trio
from raftlog.client.errors import TLSError
from raftlog.client.protocol import FrameDecoder, encode_frame, hello
from raftlog.client.tls import TLSConfig, client_context

from .auth_reload import sighup_reloads
from .cli_common import (
    bootstrap_addresses,
    client_credential,
    client_tls,
    cluster_options,
    config_credential,
)
from .config import ClusterConfig, ConfigError, NodeConfig, load_config, parse_address
from .open_files import raise_soft_limit
from .tls import peer_context, server_context

log = logging.getLogger("raftlog.cli")

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
DEFAULT_CONFIG = "cluster.toml"
READY_LINE = "raftlog node ready"


def fail(message: str, code: int) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(code)


def load_or_exit(path: Path) -> ClusterConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None


# ---------------------------------------------------------------- a tiny status client


class ProbeError(Exception):
    """The node could not be asked (down, refused the hello, answered an error)."""


def request_once(
    address: str,
    op: str,
    fields: dict[str, Any] | None = None,
    *,
    timeout_s: float = 2.0,
    tls: ssl.SSLContext | TLSConfig | None = None,
    credential: str | None = None,
) -> dict[str, Any]:
    """One request on a fresh blocking connection; the reply's fields or ProbeError.

    Deliberately independent of raftlog.client's connection code: the operator
    tools and the test harness must work (and diagnose) even when the client
    library does not. ``tls``: connect with TLS (the context, or settings).
    ``credential``: the hello's token, for nodes with [auth].
    """
    host, port = parse_address(address)
    deadline = time.monotonic() + timeout_s
    try:
        context = client_context(tls)
    except TLSError as exc:
        raise ProbeError(f"{address}: {exc}") from None
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout_s))
            if context is not None:
                # Handshake here, within the socket's timeout; checks the host.
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname=host))
            sock.sendall(
                encode_frame(hello("client", f"raftlog-cli-{os.getpid()}", credential=credential))
                + encode_frame({"type": op, "id": 1, **(fields or {})})
            )
            decoder = FrameDecoder()
            frames: list[dict[str, Any]] = []
            while len(frames) < 2:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProbeError(f"{address}: no reply within {timeout_s}s")
                sock.settimeout(remaining)
                data = sock.recv(1 << 20)
                if not data:
                    if frames and not frames[0].get("ok", True):
                        break
                    raise ProbeError(f"{address}: connection closed")
                frames += decoder.feed(data)
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{address}: {exc}") from None
    for frame in frames:
        if frame.get("ok") is False:
            raise ProbeError(f"{address}: {frame.get('error')}: {frame.get('message')}")
    return frames[1]


def gather_status(
    addresses: Sequence[str],
    timeout_s: float = 2.0,
    *,
    tls: ssl.SSLContext | TLSConfig | None = None,
    credential: str | None = None,
) -> dict[str, Any]:
    """cluster_status of every address, and of every node those report (so one
    bootstrap address is enough): {address: reply or {"error": text}}."""
    out: dict[str, Any] = {}
    try:
        context = client_context(tls)  # once for all the addresses
    except TLSError as exc:
        return {address: {"error": f"{address}: {exc}"} for address in addresses}
    todo = list(dict.fromkeys(addresses))
    while todo:
        address = todo.pop(0)
        try:
            reply = request_once(
                address, "cluster_status", timeout_s=timeout_s, tls=context, credential=credential
            )
        except ProbeError as exc:
            out[address] = {"error": str(exc)}
            continue
        out[address] = reply
        for node in reply.get("nodes") or ():
            other = node.get("address") if isinstance(node, dict) else None
            if isinstance(other, str) and other not in out and other not in todo:
                todo.append(other)
    return out


def probe_tls(cfg: ClusterConfig) -> TLSConfig | None:
    """How the tools that hold the whole cluster.toml (``cluster up``, the test
    harness) connect to its nodes: [tls]'s CA, and as client certificate
    [tls]'s own, else the first node's (needed with client_auth = true)."""
    if cfg.tls is None:
        return None
    cert, key = cfg.tls_cert_and_key(cfg.nodes[0].id)
    return TLSConfig(
        ca_file=cfg.tls.ca_file, cert_file=cert, key_file=key, crl_file=cfg.tls.crl_file
    )


def merge_groups(statuses: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per group: the view of its highest-term leader among reachable nodes
    (else of the node that saw the highest term)."""

    def rank(group: dict[str, Any]) -> tuple[bool, int]:
        return (group.get("role") == "leader", group.get("term") or 0)

    rows: dict[int, dict[str, Any]] = {}
    for status in statuses.values():
        if "error" in status:
            continue
        for group in status.get("groups", []):
            current = rows.get(group.get("group"))
            if current is None or rank(group) > rank(current):
                rows[group.get("group")] = dict(group, reported_by=status.get("node"))
    return [rows[g] for g in sorted(rows, key=lambda g: (g is None, g))]


def leaders_ready(statuses: dict[str, Any], expected_nodes: int) -> bool:
    """Every node answered, and every group any node hosts is led by one of them.

    A follower's idea of the leader is not enough: after a crash it still
    names the dead node until an election timeout passes.
    """
    answered = [s for s in statuses.values() if "error" not in s]
    if len(answered) < expected_nodes:
        return False
    groups = merge_groups(statuses)
    return bool(groups) and all(g.get("role") == "leader" for g in groups)


def wait_for_leaders(
    addresses: Sequence[str],
    deadline_s: float,
    *,
    tls: ssl.SSLContext | TLSConfig | None = None,
) -> dict[str, Any]:
    """Poll until ``leaders_ready`` or the deadline; returns the last statuses."""
    end = time.monotonic() + deadline_s
    context = client_context(tls)
    while True:
        statuses = gather_status(addresses, timeout_s=1.0, tls=context)
        if leaders_ready(statuses, len(addresses)):
            return statuses
        if time.monotonic() >= end:
            raise TimeoutError(f"no leader for every group within {deadline_s}s")
        time.sleep(0.1)


# ---------------------------------------------------------------- node start


def _exceptions(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _exceptions(inner)
    else:
        yield exc


def _data_dir_error_type() -> type[BaseException]:
    try:
        from raftlog.log.identity import DataDirError
    except ImportError:  # storage not built yet
        return ConfigError
    return DataDirError


async def _run_until_signal(cfg: ClusterConfig, node_id: str) -> None:
    from raftlog.server.node import run_node

    node = cfg.node(node_id)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_node(cfg, node_id, task_status=task_status))
            # One parseable line on stdout: `cluster up` and the test harness wait for it.
            print(f"{READY_LINE} node={node_id} address={node.address}", flush=True)
            async for signum in signals:
                log.info("event=signal node=%s signal=%s", node_id, signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


@click.group()
def node() -> None:
    """Run one node of a cluster."""


@node.command("start")
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The cluster.toml that lists this node.",
)
@click.option("--node", "node_id", required=True, help="This node's id in the config.")
def node_start(config_path: Path, node_id: str) -> None:
    """Start node NODE of the cluster in --config; stops cleanly on SIGTERM/SIGINT."""
    cfg = load_or_exit(config_path)
    try:
        node_cfg = cfg.node(node_id)
    except ConfigError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    try:
        # [tls]: load the certificate, key and CA now, before the data dir is
        # touched (the contexts are cached for the node to use).
        server_context(cfg, node_id)
        peer_context(cfg, node_id)
    except ConfigError as exc:
        raise fail(f"node {node_id}: {exc}", EXIT_CONFIG) from None
    raftlog_log = logging.getLogger("raftlog")
    if raftlog_log.getEffectiveLevel() > logging.INFO:
        raftlog_log.setLevel(logging.INFO)  # a node logs its events unless -v asks for more
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    before, after = raise_soft_limit()  # connections and RocksDB files (server/open_files.py)
    if after != before:
        log.info("event=open_files_limit_raised node=%s from=%d to=%d", node_id, before, after)
    data_dir_error = _data_dir_error_type()
    try:
        trio.run(_run_until_signal, cfg, node_id)
    except BaseException as exc:  # sorted below; anything else is re-raised
        for inner in _exceptions(exc):
            if isinstance(inner, data_dir_error | ConfigError):
                raise fail(f"node {node_id}: {inner}", EXIT_CONFIG) from None
            if isinstance(inner, OSError) and inner.errno == errno.EADDRINUSE:
                raise fail(
                    f"node {node_id}: address {node_cfg.address} (or its peer or metrics "
                    "address) is already in use; is this node already running?",
                    EXIT_RUNTIME,
                ) from None
            if type(inner).__name__ == "StorageFailedError":  # server.driver: disk full, I/O
                raise fail(
                    f"node {node_id} stopped: it cannot write its data dir "
                    f"{node_cfg.data_dir}: {inner}",
                    EXIT_RUNTIME,
                ) from None
            if isinstance(inner, ModuleNotFoundError) and "raftlog.server.node" in str(inner):
                raise fail("this build has no server.node yet", EXIT_RUNTIME) from None
        raise
    log.info("event=node_exit node=%s", node_id)


# ---------------------------------------------------------------- cluster up


def port_taken(address: str) -> bool:
    host, port = parse_address(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The same option the node's listener uses, so TIME_WAIT leftovers of
        # a previous run do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def log_path(node_cfg: NodeConfig) -> Path:
    # Beside the data dir, not in it: RocksDB refuses a non-empty new directory.
    return node_cfg.data_dir.with_name(node_cfg.data_dir.name + ".log")


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(slots=True)
class Child:
    node: NodeConfig
    proc: subprocess.Popen[bytes]
    log: Path


def node_command(config_path: Path, node_id: str) -> list[str]:
    return [
        sys.executable, "-m", "raftlog.server", "node", "start",
        "--config", str(config_path), "--node", node_id,
    ]  # fmt: skip


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM us when `cluster up` dies, even by SIGKILL.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere a killed `cluster up` can
    leave nodes running. It fires when the forking THREAD exits, which is fine
    here: `cluster up` spawns from its main thread and lives as long as them.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def spawn(cfg: ClusterConfig, config_path: Path, node_cfg: NodeConfig) -> Child:
    path = log_path(node_cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as out:
        proc = subprocess.Popen(
            node_command(config_path, node_cfg.id),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our signals reach it only when we forward them
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    return Child(node_cfg, proc, path)


def stop_children(children: Sequence[Child], grace_s: float = 10.0) -> None:
    for child in children:
        if child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace_s
    for child in children:
        try:
            child.proc.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            click.echo(f"node {child.node.id} ignored SIGTERM for {grace_s}s; killing", err=True)
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            child.proc.wait()


def _died(children: Sequence[Child]) -> list[Child]:
    return [c for c in children if c.proc.poll() is not None]


def _report_death(child: Child) -> None:
    click.echo(
        f"node {child.node.id} exited with code {child.proc.returncode}; "
        f"last lines of {child.log}:\n{tail(child.log)}",
        err=True,
    )


@click.group()
def cluster() -> None:
    """Run or inspect a whole cluster."""


@cluster.command("up")
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
@click.option(
    "--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait for leaders."
)
def cluster_up(config_path: Path, timeout_s: float) -> None:
    """Start every node of --config, wait for leaders, run until Ctrl-C / SIGTERM."""
    cfg = load_or_exit(config_path)
    for node_cfg in cfg.nodes:
        for what, address in (
            ("address", node_cfg.address),
            ("peer_address", node_cfg.peer_address),
            ("metrics", node_cfg.metrics_address),
        ):
            if address and port_taken(address):
                raise fail(
                    f"node {node_cfg.id} {what} {address} is already in use "
                    "(is a cluster already running? try `raftlog cluster status`)",
                    EXIT_RUNTIME,
                )
    try:
        # The readiness probe speaks TLS too when the nodes do ([tls]).
        probe = client_context(probe_tls(cfg))
        credential = config_credential(config_path)  # [auth]: the operator's token
    except TLSError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    stop = threading.Event()
    received: list[int] = []

    children: list[Child] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:  # [tls] only: every node reloads its TLS files
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGHUP)
            return
        received.append(signum)
        stop.set()

    # Without [tls] a SIGHUP (a closed terminal) stops the cluster, as it always did.
    handled = (signal.SIGTERM, signal.SIGINT) + ((signal.SIGHUP,) if sighup_reloads(cfg) else ())
    previous = {s: signal.signal(s, on_signal) for s in handled}
    try:
        for node_cfg in cfg.nodes:
            children.append(spawn(cfg, config_path, node_cfg))
        addresses = [n.address for n in cfg.nodes]
        end = time.monotonic() + timeout_s
        while True:
            if dead := _died(children):
                for child in dead:
                    _report_death(child)
                raise fail("a node died during startup", EXIT_RUNTIME)
            if stop.is_set():
                return
            statuses = gather_status(addresses, timeout_s=1.0, tls=probe, credential=credential)
            if leaders_ready(statuses, len(addresses)):
                break
            if time.monotonic() >= end:
                for child in children:
                    click.echo(f"--- {child.log}:\n{tail(child.log, 10)}", err=True)
                raise fail(f"no leader for every group within {timeout_s}s", EXIT_RUNTIME)
            stop.wait(0.2)
        for child in children:
            n = child.node
            click.echo(
                f"node {n.id}  address={n.address}  "
                + (f"peer_address={n.peer_address}  " if n.peer_address else "")
                + f"metrics={n.metrics_address or '-'}  "
                f"data_dir={n.data_dir}  log={child.log}"
            )
        click.echo(f"cluster {cfg.name} ready: {len(children)} nodes (Ctrl-C to stop)", nl=True)
        sys.stdout.flush()
        reported: set[str] = set()
        while not stop.wait(0.5):
            for child in _died(children):
                if child.node.id not in reported:
                    reported.add(child.node.id)
                    _report_death(child)
            if len(reported) == len(children):
                raise fail("every node has exited", EXIT_RUNTIME)
    finally:
        stop_children(children)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            click.echo(f"stopped {len(children)} nodes", err=True)


# ---------------------------------------------------------------- cluster status


def _replicas_text(group: dict[str, Any]) -> str:
    parts = []
    for r in group.get("replicas") or []:
        parts.append(f"{r.get('node')}:{r.get('match')}(lag {r.get('lag')})")
    return " ".join(parts) or "-"


def auth_mismatch(statuses: dict[str, Any]) -> str | None:
    """A warning when the reachable nodes do not all hold the same [auth] (one
    was not sent SIGHUP after an edit, or has another file); None if they agree."""
    prints = {
        str(s.get("node")): (s.get("auth") or {}).get("fingerprint", "none")
        for s in statuses.values()
        if "error" not in s
    }
    if len(set(prints.values())) <= 1:
        return None
    listed = ", ".join(f"{node} {fp}" for node, fp in sorted(prints.items()))
    return (
        f"WARNING: the nodes hold different [auth] users/tokens ({listed}): edit cluster.toml "
        "alike on every node, then `raftlog cluster reload` (or SIGHUP each node)"
    )


# Like the alert the README suggests for raftlog_tls_cert_expiry_timestamp_seconds.
TLS_EXPIRY_WARN_S = 14 * 86400
_TLS_EXPIRY_TEXT = {
    "node": ("its certificate (cert_file) expires", "rotate it"),
    "ca": ("a CA in its ca_file expires", "the certificates it signs stop verifying"),
    "crl": (
        "a CRL in its crl_file reaches its nextUpdate",
        "past it, every certificate of that CA is refused: publish a new CRL and reload",
    ),
}


def tls_expiry_warnings(
    statuses: dict[str, Any], now: float, within_s: float = TLS_EXPIRY_WARN_S
) -> list[str]:
    """A warning for each TLS file a reachable node loaded that stops working
    within ``within_s`` of ``now`` (or already has): its certificate, its CAs,
    its CRLs (server/tls.py ``expiries``)."""
    warnings = []
    for status in statuses.values():
        expires = (status.get("tls") or {}).get("expires") or {}
        for which, when in sorted(expires.items()):
            if which not in _TLS_EXPIRY_TEXT or not isinstance(when, int | float):
                continue
            left = when - now
            if left > within_s:
                continue
            what, action = _TLS_EXPIRY_TEXT[which]
            date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
            due = f"in {left / 86400:.1f} days" if left > 0 else "ALREADY PAST"
            warnings.append(f"WARNING: {status.get('node')}: {what} {date} ({due}): {action}")
    return warnings


def log_format_line(statuses: dict[str, Any]) -> str | None:
    """The cluster's log format (log/features.py) and what each reachable node
    reads, with what that means when they differ; None: no node reported one."""
    formats = {
        str(s.get("node")): s["log_format"]
        for s in statuses.values()
        if "error" not in s and isinstance(s.get("log_format"), dict)
    }
    if not formats:
        return None
    cluster = max(int(f.get("cluster", 1)) for f in formats.values())
    reads = {node: int(f.get("node", 1)) for node, f in formats.items()}
    listed = ", ".join(f"{node} {fmt}" for node, fmt in sorted(reads.items()))
    line = f"log format {cluster} (nodes read: {listed})"
    behind = sorted(node for node, fmt in reads.items() if fmt < cluster)
    if behind:
        return (
            f"{line}\nWARNING: {', '.join(behind)} cannot read log format {cluster}: "
            "their peers refuse them; upgrade them or lift their [cluster] max_log_format"
        )
    if min(reads.values()) > cluster and len(reads) == len(statuses):
        line += f"; rises to {min(reads.values())} once every registered node is connected"
    return line


def render_status_table(statuses: dict[str, Any]) -> str:
    lines = []
    for address, status in statuses.items():
        if "error" in status:
            lines.append(f"node {address}: UNREACHABLE {status['error']}")
        else:
            auth = status.get("auth")
            auth_text = f", auth {auth.get('fingerprint')}" if isinstance(auth, dict) else ""
            lines.append(
                f"node {status.get('node')} ({address}): {len(status['groups'])} groups{auth_text}"
            )
    warning = auth_mismatch(statuses)
    if warning is not None:
        lines.append(warning)
    lines += tls_expiry_warnings(statuses, time.time())
    formats = log_format_line(statuses)
    if formats is not None:
        lines.append(formats)
    header = ("GROUP", "TOPIC/PART", "LEADER", "TERM", "COMMIT", "REPLICAS match(lag)")
    rows = [header]
    for g in merge_groups(statuses):
        topic = g.get("topic")
        where = "(metadata)" if topic is None else f"{topic}/{g.get('partition')}"
        rows.append(
            (
                str(g.get("group")), where, str(g.get("leader") or "-"), str(g.get("term")),
                str(g.get("commit")), _replicas_text(g),
            )
        )  # fmt: skip
    lines.append("")
    lines += aligned(rows)
    return "\n".join(lines)


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows as lines of columns padded to their widest cell (the last one unpadded)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


@cluster.command("status")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", "timeout_s", default=2.0, show_default=True)
def cluster_status(
    config: Path | None, bootstrap: str | None, as_json: bool, timeout_s: float
) -> None:
    """Every group's leader, term, commit and replica lag, from every node's view."""
    addresses = bootstrap_addresses(config, bootstrap)
    statuses = gather_status(
        addresses, timeout_s=timeout_s, tls=client_tls(), credential=client_credential()
    )
    if as_json:
        warning = auth_mismatch(statuses)
        warnings = [] if warning is None else [warning]
        report = {
            "nodes": statuses,
            "groups": merge_groups(statuses),
            "warnings": warnings + tls_expiry_warnings(statuses, time.time()),
        }
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(render_status_table(statuses))
    if all("error" in s for s in statuses.values()):
        raise click.exceptions.Exit(EXIT_UNREACHABLE)


def reload_everywhere(
    statuses: dict[str, Any],
    timeout_s: float,
    *,
    tls: TLSConfig | None,
    credential: str | None,
) -> dict[str, Any]:
    """``config_reload`` on every node ``statuses`` (gather_status) reached:
    {address: reply or {"error": text}}; an unreachable node stays an error."""
    out: dict[str, Any] = {}
    for address, status in statuses.items():
        if "error" in status:
            out[address] = status
            continue
        try:
            out[address] = request_once(
                address, "config_reload", timeout_s=timeout_s, tls=tls, credential=credential
            )
        except ProbeError as exc:
            out[address] = {"error": str(exc)}
    return out


def reload_problems(replies: dict[str, Any]) -> list[str]:
    """Why the reload did not leave every node on the same new config (empty: it did)."""
    problems = []
    for address, reply in replies.items():
        if "error" in reply:
            problems.append(f"{address}: not reloaded: {reply['error']}")
            continue
        for part, error in sorted((reply.get("reloaded") or {}).items()):
            if error is not None:
                problems.append(f"node {reply.get('node')}: {part} kept the old config: {error}")
    mismatch = auth_mismatch(replies)
    if mismatch is not None:
        problems.append(mismatch)
    return problems


def _reload_state(reply: dict[str, Any], part: str) -> str:
    reloaded = reply.get("reloaded") or {}
    if part not in reloaded:
        return "-"
    return "reloaded" if reloaded[part] is None else "FAILED"


@cluster.command("reload")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", "timeout_s", default=5.0, show_default=True)
def cluster_reload(
    config: Path | None, bootstrap: str | None, as_json: bool, timeout_s: float
) -> None:
    """Make every node re-read its config file for the TLS files and [auth], as
    SIGHUP does, and check they all hold the same [auth] afterwards.

    Copy the edited cluster.toml to every node first. Exits 1 when a node was
    not reached, kept its old config (the file did not load), or holds other
    users and tokens than the rest."""
    addresses = bootstrap_addresses(config, bootstrap)
    tls, credential = client_tls(), client_credential()
    statuses = gather_status(addresses, timeout_s=timeout_s, tls=tls, credential=credential)
    if all("error" in s for s in statuses.values()):
        errors = [str(s["error"]) for s in statuses.values()]
        # Answered, but refused (not an operator's token): the cluster is reachable.
        refused = all(": FORBIDDEN:" in e or ": UNAUTHORIZED:" in e for e in errors)
        for error in errors:
            click.echo(error if refused else f"UNREACHABLE {error}", err=True)
        raise click.exceptions.Exit(EXIT_RUNTIME if refused else EXIT_UNREACHABLE)
    replies = reload_everywhere(statuses, timeout_s, tls=tls, credential=credential)
    problems = reload_problems(replies)
    if as_json:
        click.echo(json.dumps({"nodes": replies, "problems": problems}, indent=2))
    else:
        rows = [("NODE", "ADDRESS", "TLS", "AUTH", "AUTH FINGERPRINT")]
        for address, reply in replies.items():
            if "error" in reply:
                rows.append(("?", address, "UNREACHABLE", "", ""))
                continue
            auth = reply.get("auth") or {}
            rows.append(
                (
                    str(reply.get("node")), address, _reload_state(reply, "tls"),
                    _reload_state(reply, "auth"), str(auth.get("fingerprint", "-")),
                )
            )  # fmt: skip
        for line in aligned(rows):
            click.echo(line.rstrip())
        for problem in problems:
            click.echo(problem, err=True)
    if problems:
        raise click.exceptions.Exit(EXIT_RUNTIME)
