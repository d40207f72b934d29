"""The ``raftlog`` command.

Each family of subcommands lives in its own module and registers itself here,
so that the node, the data-path and the jepsen commands can grow separately.
"""

from __future__ import annotations

import importlib
import logging

import click

# (module, attribute) of each click group or command added to the root.
_SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("raftlog.server.cli_node", "node"),
    ("raftlog.server.cli_node", "cluster"),
    ("raftlog.server.cli_health", "cluster"),  # adds `cluster health` to that group
    ("raftlog.server.cli_data", "topic"),
    ("raftlog.server.cli_data", "produce"),
    ("raftlog.server.cli_data", "consume"),
    ("raftlog.server.cli_groups", "group_cli"),
    ("raftlog.server.cli_users", "user_cli"),
    ("raftlog.server.cli_data", "bench"),
    ("raftlog.server.cli_ops", "member"),
    ("raftlog.server.cli_ops", "partition"),
    ("raftlog.server.cli_ops", "leader"),
    ("raftlog.jepsen.cli", "jepsen"),
)


@click.group()
@click.version_option(package_name="raftlog")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """raftlog: a Raft-replicated message log."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _register() -> None:
    for module_name, attr in _SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A family not built yet; anything else (a bug in it) must surface.
            if exc.name != module_name:
                raise
            continue
        command = getattr(module, attr, None)
        if command is not None:
            main.add_command(command)


_register()
