"""[tls] in cluster.toml: parsing, validation, rendering; the CLI's TLS options;
certificate host matching; a node refusing to start on bad TLS material."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from raftlog.client.tls import TLSConfig
from raftlog.server.cli import main
from raftlog.server.cli_common import resolve_tls
from raftlog.server.config import ClusterTLSConfig, ConfigError, load_config, render_config
from raftlog.server.tls import cert_names_host

from .test_tls import TLSFiles
from .test_tls_crl import write_crl

BASE = """
[cluster]
name = "tls"

[[node]]
id = "n1"
address = "127.0.0.1:7101"
{n1_extra}

[[node]]
id = "n2"
address = "127.0.0.1:7102"
{n2_extra}
"""


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    files = TLSFiles.create(tmp_path / "tls")
    files.issue("node", "127.0.0.1")
    files.issue("n2", "127.0.0.1")
    write_crl(files, files.root / "crl.pem", [])
    return files


def write(tmp_path: Path, tls: str, n2_extra: str = "", n1_extra: str = "") -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(BASE.format(n1_extra=n1_extra, n2_extra=n2_extra) + tls)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


SHARED = '[tls]\nca_file = "tls/ca.pem"\ncert_file = "tls/node.pem"\nkey_file = "tls/node.key"\n'


def test_no_tls_table_means_plaintext(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).tls is None


def test_paths_resolve_against_the_file_and_nodes_override(tmp_path: Path, files: TLSFiles) -> None:
    n2 = 'tls_cert_file = "tls/n2.pem"\ntls_key_file = "tls/n2.key"'
    cfg = load_config(write(tmp_path, SHARED + "client_auth = true\n", n2))
    base = tmp_path.resolve() / "tls"
    assert cfg.tls == ClusterTLSConfig(
        ca_file=base / "ca.pem",
        cert_file=base / "node.pem",
        key_file=base / "node.key",
        client_auth=True,
    )
    assert cfg.tls_cert_and_key("n1") == (base / "node.pem", base / "node.key")
    assert cfg.tls_cert_and_key("n2") == (base / "n2.pem", base / "n2.key")


N1_OWN = 'tls_cert_file = "tls/node.pem"\ntls_key_file = "tls/node.key"'
N2_OWN = 'tls_cert_file = "tls/n2.pem"\ntls_key_file = "tls/n2.key"'


@pytest.mark.parametrize(
    ("tls", "n1_extra", "n2_extra"),
    [
        (SHARED, "", ""),
        (SHARED + "client_auth = true\n", "", N2_OWN),
        ('[tls]\nca_file = "tls/ca.pem"\n', N1_OWN, N2_OWN),  # each node its own only
        (SHARED + 'crl_file = "tls/crl.pem"\n', "", ""),
    ],
    ids=["shared", "client_auth+override", "per_node", "crl"],
)
def test_render_round_trips_the_table_and_node_overrides(
    tmp_path: Path, files: TLSFiles, tls: str, n1_extra: str, n2_extra: str
) -> None:
    cfg = load_config(write(tmp_path, tls, n2_extra, n1_extra))
    assert cfg.tls is not None
    again = tmp_path / "again.toml"
    again.write_text(render_config(cfg))
    reloaded = load_config(again)
    assert (reloaded.tls, reloaded.nodes) == (cfg.tls, cfg.nodes)


@pytest.mark.parametrize(
    ("tls", "n2_extra", "expected"),
    [
        ("[tls]\n", "", "tls.ca_file is required"),
        ('[tls]\nca_file = "tls/nope.pem"\n', "", "tls.ca_file"),
        ('[tls]\nca_file = "tls"\n', "", "tls.ca_file"),
        (SHARED.replace('key_file = "tls/node.key"\n', ""), "", "and key_file must be set"),
        (SHARED.replace("tls/node.key", "tls/missing.key"), "", "missing.key': no such file"),
        (SHARED + "client_auth = 1\n", "", "tls.client_auth must be bool"),
        (SHARED + 'crl_file = "tls/none.pem"\n', "", "none.pem': no such file"),
        (SHARED + "verify = true\n", "", "tls.verify is not a known key"),
        ('[tls]\nca_file = "tls/ca.pem"\n', "", "node[0] (n1) has no TLS certificate"),
        ("", 'tls_cert_file = "tls/n2.pem"\ntls_key_file = "tls/n2.key"', "needs a [tls] table"),
        (SHARED, 'tls_cert_file = "tls/n2.pem"', "tls_cert_file and tls_key_file must be set"),
        (SHARED, 'tls_cert_file = ""\ntls_key_file = "x"', "tls_cert_file must not be empty"),
    ],
)
def test_invalid_tls_config_names_the_key(
    tmp_path: Path, files: TLSFiles, tls: str, n2_extra: str, expected: str
) -> None:
    path = write(tmp_path, tls, n2_extra)
    message = load_error(path)
    assert message.startswith(str(path) + ":") and expected in message, message


@pytest.mark.parametrize(
    ("cert", "host", "valid"),
    [
        ([("IP Address", "127.0.0.1")], "127.0.0.1", True),
        ([("IP Address", "127.0.0.2")], "127.0.0.1", False),
        ([("IP Address", "0:0:0:0:0:0:0:1\n")], "::1", True),
        ([("DNS", "127.0.0.1")], "127.0.0.1", False),  # an IP must be an IP SAN
        ([("DNS", "Node1.Example")], "node1.example", True),
        ([("DNS", "*.example")], "node1.example", True),
        ([("DNS", "*.example")], "a.node1.example", False),
        ([("DNS", "*.example")], "example", False),
        ([], "127.0.0.1", False),
    ],
)
def test_certificate_host_matching(cert: list, host: str, valid: bool) -> None:
    assert cert_names_host({"subjectAltName": tuple(cert)}, host) is valid


def test_cli_tls_flags_win_over_the_config_table(tmp_path: Path, files: TLSFiles) -> None:
    path = write(tmp_path, SHARED)
    base = tmp_path.resolve() / "tls"
    from_file = TLSConfig(base / "ca.pem", base / "node.pem", base / "node.key")
    assert resolve_tls(path, None, None, None, None) == from_file
    mine = Path("me.pem")
    assert resolve_tls(path, None, None, mine, None) == TLSConfig(base / "ca.pem", mine, None)
    assert resolve_tls(None, "127.0.0.1:7101", None, None, None) is None  # no file read
    ca = Path("other-ca.pem")
    assert resolve_tls(None, "127.0.0.1:7101", ca, None, None) == TLSConfig(ca, None, None)
    with pytest.raises(click.BadParameter, match="needs --tls-cert"):
        resolve_tls(path, None, None, None, Path("k.pem"))
    # The file's crl_file checks the nodes' certificates too.
    crl = write(tmp_path, SHARED + 'crl_file = "tls/crl.pem"\n')
    assert resolve_tls(crl, None, None, None, None) == replace(from_file, crl_file=base / "crl.pem")
    flag = Path("mine-crl.pem")
    assert resolve_tls(crl, None, None, None, None, flag) == replace(from_file, crl_file=flag)


def test_every_bootstrap_command_takes_the_tls_flags() -> None:
    missing = []

    def walk(command: click.Command, name: str) -> None:
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                walk(sub, f"{name} {sub_name}")
            return
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        flags = {"--tls-ca", "--tls-cert", "--tls-key", "--tls-crl"}
        if "--bootstrap" in options and not flags <= options:
            missing.append(name)

    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None
        walk(command, name)
    assert missing == []


def test_node_start_refuses_a_key_that_does_not_match_its_certificate(
    tmp_path: Path, files: TLSFiles
) -> None:
    path = write(tmp_path, SHARED.replace("tls/node.key", "tls/n2.key"))
    result = CliRunner().invoke(main, ["node", "start", "--config", str(path), "--node", "n1"])
    assert result.exit_code == 2, result.output
    assert "node n1: cannot load the TLS certificate" in result.output, result.output
    assert "n2.key" in result.output and "key values mismatch" in result.output
    assert not (tmp_path / "data").exists()  # refused before the data dir was created


def test_node_start_refuses_a_crl_file_that_holds_a_certificate(
    tmp_path: Path, files: TLSFiles
) -> None:
    """A certificate in crl_file would become a trust anchor (OpenSSL loads
    both through one call): the node names the file and does not start."""
    path = write(tmp_path, SHARED + 'crl_file = "tls/ca.pem"\n')
    result = CliRunner().invoke(main, ["node", "start", "--config", str(path), "--node", "n1"])
    assert result.exit_code == 2, result.output
    assert "crl_file" in result.output and "found CERTIFICATE" in result.output, result.output
    assert not (tmp_path / "data").exists()
