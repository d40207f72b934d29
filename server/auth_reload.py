"""SIGHUP: a running node takes new client tokens and ``[[auth.user]]`` entries.

Users come and go, grants change and tokens are rotated without a restart,
like the TLS files (server/tls.py). ``reload_on_sighup`` is the one SIGHUP
handler of a node: TLS files when it has ``[tls]``, ``[auth]`` when it
authenticates clients.

What a reload changes, and what it does not:

* Every hello after it checks tokens against the new file.
* A connection already open checks the token it authenticated with again at
  its next request (server/listener.py ``_reauthenticate``). Still valid: it
  serves on with the grants and quotas that token has now. Gone (a removed
  user, a rotated token, a dropped client token): UNAUTHORIZED on every request
  from then on, so a leaked token is cut off everywhere, like Kafka's
  re-authentication (KIP-368) but at once rather than at a session's end.
* Only ``client_tokens``, users and ``revoked_grace_s`` (how long the sweep
  leaves a revoked connection open, server/connection_sweeper.py) are taken.
  A changed ``peer_token``, or a
  reload that would switch client authentication off, is refused (a restart
  does that, on purpose), and so is a file that does not load: the node keeps
  what it had and says why (log, ``raftlog_auth_reloads_total{result}``).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import trio

from . import tls
from .config import ClusterConfig, ConfigError, load_config
from .metrics import Metrics

log = logging.getLogger(__name__)


def reload_auth(cfg: ClusterConfig) -> tuple[int, int]:
    """Take ``[auth]``'s client tokens and users from ``cfg.path`` into ``cfg``
    in place; returns (users, client tokens). ConfigError: nothing changed."""
    if cfg.path is None:
        raise ConfigError("this node's config was not read from a file: nothing to reload")
    fresh = load_config(cfg.path).auth
    if fresh.peer_token != cfg.auth.peer_token:
        raise ConfigError(f"{cfg.path}: [auth] peer_token changed: that takes a restart")
    if not fresh.authenticates_clients:
        raise ConfigError(
            f"{cfg.path}: [auth] would no longer authenticate clients: that takes a restart"
        )
    # Read at the listener's next sweep (server/connection_sweeper.py), which
    # also judges the connections this reload revokes.
    cfg.auth.revoked_grace_s = fresh.revoked_grace_s
    cfg.auth.replace_clients(fresh.client_tokens, fresh.users)
    return len(fresh.users), len(fresh.client_tokens)


def reload_auth_and_report(cfg: ClusterConfig, node_id: str, metrics: Metrics) -> str | None:
    """``reload_auth``, logged and counted: None if it worked, else why not."""
    try:
        users, tokens = reload_auth(cfg)
    except (ConfigError, OSError) as exc:
        metrics.auth_reloads.inc(result="failed")
        log.error("event=auth_reload_failed node=%s error=%s (still using the old [auth])",
                  node_id, exc)  # fmt: skip
        return str(exc)
    metrics.auth_reloads.inc(result="ok")
    log.info("event=auth_reloaded node=%s users=%d client_tokens=%d revoked_grace_s=%g",
             node_id, users, tokens, cfg.auth.revoked_grace_s)  # fmt: skip
    return None


def reload_node(cfg: ClusterConfig, node_id: str, metrics: Metrics) -> dict[str, str | None]:
    """What SIGHUP reloads, for the parts this node has: ``{"tls": ..., "auth": ...}``,
    each None if it worked, else why not (that part keeps what it had). Also the
    ``config_reload`` request (``raftlog cluster reload``), which does it on every
    node from one place."""
    out: dict[str, str | None] = {}
    if cfg.tls is not None:
        out["tls"] = tls.reload_and_report(cfg, node_id, metrics)
    if cfg.auth.authenticates_clients:
        out["auth"] = reload_auth_and_report(cfg, node_id, metrics)
    return out


async def reload_on_sighup(
    cfg: ClusterConfig,
    node_id: str,
    metrics: Metrics,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reload on every SIGHUP (``kill -HUP``; ``cluster up`` passes its SIGHUP on to
    every node). A node with neither [tls] nor client authentication keeps
    SIGHUP's default meaning (the process stops). Only a process's main thread
    receives signals, so elsewhere (several in-process test nodes) this does nothing."""
    if cfg.auth.authenticates_clients:
        for result in ("ok", "failed"):  # present at 0, so rate() alerts work at once
            metrics.auth_reloads.inc(0, result=result)
    if not sighup_reloads(cfg) or threading.current_thread() is not threading.main_thread():
        task_status.started()
        return
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            reload_node(cfg, node_id, metrics)


def sighup_reloads(cfg: ClusterConfig) -> bool:
    """Does a node of ``cfg`` handle SIGHUP (``reload_on_sighup``)?"""
    return cfg.tls is not None or cfg.auth.authenticates_clients
