"""cluster.toml loading: defaults, validation messages, render round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from raftlog.log.features import LOG_FORMAT
from raftlog.server.address_limits import AddressOverrides
from raftlog.server.config import (
    AuthConfig,
    ClusterConfig,
    ConfigError,
    Limits,
    NodeConfig,
    QuotaConfig,
    StorageConfig,
    User,
    load_config,
    render_config,
)

GOOD = """
[cluster]
name = "local"

[[node]]
id = "n1"
address = "127.0.0.1:7101"
data_dir = "data/n1"
metrics_address = "127.0.0.1:9101"

[[node]]
id = "n2"
address = "127.0.0.1:7102"
data_dir = "/abs/n2"
dial = { n1 = "127.0.0.1:9999" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path) + ":"), message
    return message


def test_defaults_and_relative_data_dir_resolve_against_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.name == "local"
    assert (cfg.tick_ms, cfg.election_ticks, cfg.heartbeat_ticks, cfg.fsync) == (10, 20, 2, True)
    assert not cfg.unsafe_ack_before_commit and not cfg.unsafe_follower_reads
    assert cfg.limits == Limits()
    assert cfg.auth.client_tokens == () and cfg.auth.peer_token is None
    n1 = cfg.node("n1")
    assert (n1.host, n1.port) == ("127.0.0.1", 7101)
    assert n1.data_dir == tmp_path.resolve() / "data" / "n1"
    assert cfg.node("n2").data_dir == Path("/abs/n2")
    assert n1.metrics_address == "127.0.0.1:9101" and cfg.node("n2").metrics_address is None


def test_dial_overrides_default_to_peer_address(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.dial_address("n2", "n1") == "127.0.0.1:9999"
    assert cfg.dial_address("n1", "n2") == "127.0.0.1:7102"


def test_repo_cluster_toml_loads() -> None:
    repo_file = Path(__file__).resolve().parents[2] / "cluster.toml"
    cfg = load_config(repo_file)
    assert cfg.node_ids() == ["n1", "n2", "n3"]


def test_unknown_node_id_names_file_and_known_ids(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"node 'n9' is not in the file \(known: n1, n2\)"):
        cfg.node("n9")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("127.0.0.1:7101", "127.0.0.1"), "node[0].address '127.0.0.1' is missing a port"),
        (("127.0.0.1:7101", "127.0.0.1:x"), "node[0].address '127.0.0.1:x' has a port 'x'"),
        (("127.0.0.1:7101", "127.0.0.1:70000"), "node[0].address '127.0.0.1:70000' has port"),
        (("127.0.0.1:7102", "127.0.0.1:7101"), "node[1].address '127.0.0.1:7101' duplicates"),
        (('id = "n2"', 'id = "n1"'), "node[1].id 'n1' duplicates node[0].id"),
        (('name = "local"', "name = 3"), "cluster.name must be str, got int 3"),
        (('name = "local"', 'name = "local"\ntick_ms = 0'), "cluster.tick_ms must be > 0"),
        (('name = "local"', 'name = "local"\nfsync = 1'), "cluster.fsync must be bool"),
        (('name = "local"', 'name = "local"\ntick_ms = true'), "cluster.tick_ms must be int"),
        (
            ('name = "local"', 'name = "local"\nelection_ticks = 2\nheartbeat_ticks = 2'),
            "cluster.election_ticks (2) must be greater than heartbeat_ticks (2)",
        ),
        (('name = "local"', 'name = "local"\nelction_ticks = 5'), "cluster.elction_ticks is not a"),
        (('n1 = "127.0.0.1:9999"', 'n7 = "127.0.0.1:9999"'), "node[1].dial.n7 names an unknown"),
        (('n1 = "127.0.0.1:9999"', 'n2 = "127.0.0.1:9999"'), "node[1].dial.n2 is the node itself"),
        (('n1 = "127.0.0.1:9999"', 'n1 = "nope"'), "node[1].dial.n1 'nope' is missing a port"),
        (('data_dir = "/abs/n2"', 'data_dir = "data/n1"'), "node[1].data_dir"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    assert old in GOOD
    message = load_error(tmp_path, GOOD.replace(old, new, 1))
    assert expected in message


def test_missing_pieces(tmp_path: Path) -> None:
    assert "cluster is required" in load_error(tmp_path, '[[node]]\nid="n1"\naddress="h:1"\n')
    assert "node is required" in load_error(tmp_path, '[cluster]\nname="x"\n')
    no_addr = '[cluster]\nname="x"\n[[node]]\nid="n1"\n'
    assert "node[0].address is required" in load_error(tmp_path, no_addr)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in load_error(tmp_path, "[cluster\nname=")
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_optional_tables_parse_and_validate(tmp_path: Path) -> None:
    extra = """
[limits]
max_frame_bytes = 1000
max_batch_bytes = 500

[auth]
client_tokens = ["t1", "t2"]
peer_token = "p"

[quotas]
produce_bytes_per_sec = 1000
requests_per_sec = 2.5
fetch_bytes_per_sec = 4096
"""
    cfg = load_config(write(tmp_path, GOOD + extra))
    assert cfg.limits.max_frame_bytes == 1000 and cfg.limits.max_batch_bytes == 500
    assert cfg.auth == AuthConfig(client_tokens=("t1", "t2"), peer_token="p")
    assert cfg.quotas == QuotaConfig(
        produce_bytes_per_sec=1000.0, requests_per_sec=2.5, fetch_bytes_per_sec=4096.0
    )
    bad_limits = GOOD + "[limits]\nmax_frame_bytes = 100\nmax_batch_bytes = 200\n"
    assert "limits.max_batch_bytes (200) must be at most half" in load_error(tmp_path, bad_limits)
    borderline = GOOD + "[limits]\nmax_frame_bytes = 1000\nmax_batch_bytes = 501\n"
    assert "must be at most half of max_frame_bytes (1000)" in load_error(tmp_path, borderline)
    assert "limits.bogus is not a known key" in load_error(tmp_path, GOOD + "[limits]\nbogus = 1\n")
    bad_token = GOOD + '[auth]\nclient_tokens = ["ok", 3]\n'
    assert "auth.client_tokens[1] must be a non-empty string" in load_error(tmp_path, bad_token)
    assert "quotas.requests_per_sec must be > 0" in load_error(
        tmp_path, GOOD + "[quotas]\nrequests_per_sec = -1\n"
    )


USERS = """
[auth]
peer_token = "p"

[[auth.user]]
name = "billing"
token = "tok-b"
read = ["billing.*", "events"]
write = ["billing.*"]
groups = ["billing-*"]
requests_per_sec = 50

[[auth.user]]
name = "ops"
token = "tok-o"
admin = ["*"]
cluster = true
"""


def test_users_parse_with_deny_by_default(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD + USERS))
    billing, ops = cfg.auth.users
    assert billing == User(
        "billing", "tok-b", read=("billing.*", "events"), write=("billing.*",),
        groups=("billing-*",), requests_per_sec=50.0,
    )  # fmt: skip
    assert ops == User("ops", "tok-o", admin=("*",), cluster=True)
    assert cfg.auth.authenticates_clients and not cfg.auth.client_tokens


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (('peer_token = "p"', ""), "auth.user needs [auth] peer_token"),
        (('name = "ops"', 'name = "billing"'), "auth.user[1].name 'billing' is a second user"),
        (('token = "tok-o"', 'token = "tok-b"'), "auth.user[1].token is already in use"),
        (('token = "tok-o"', 'token = "p"'), "auth.user[1].token is already in use"),
        (('token = "tok-o"', ""), "auth.user[1].token is required"),
        (('name = "ops"', 'name = ""'), "auth.user[1].name must not be empty"),
        (('write = ["billing.*"]', 'write = ["bill*ing"]'), "auth.user[0].write[0] 'bill*ing'"),
        (('groups = ["billing-*"]', "groups = [1]"), "auth.user[0].groups[0] must be a non-emp"),
        (("cluster = true", 'cluster = "yes"'), "auth.user[1].cluster must be bool"),
        (("cluster = true", "clusters = true"), "auth.user[1].clusters is not a known key"),
        (("requests_per_sec = 50", "requests_per_sec = 0"), "requests_per_sec must be > 0"),
        (("requests_per_sec = 50", "max_connections = 0"), "user[0].max_connections must be > 0"),
        (("requests_per_sec = 50", "max_connections = 1.5"), "max_connections must be int"),
    ],
)
def test_bad_users_are_named(tmp_path: Path, edit: tuple[str, str], problem: str) -> None:
    old, new = edit
    assert old in USERS
    assert problem in load_error(tmp_path, GOOD + USERS.replace(old, new, 1))


FENCED = USERS.replace(
    'read = ["billing.*", "events"]',
    'read = ["*"]\ndeny_read = ["payroll.*", "hr"]\ndeny_write = ["billing.ledger"]\n'
    'deny_admin = ["*"]\ndeny_groups = ["ops-*"]',
)


def test_users_take_deny_rules(tmp_path: Path) -> None:
    billing, ops = load_config(write(tmp_path, GOOD + FENCED)).auth.users
    assert billing == User(
        "billing", "tok-b", read=("*",), write=("billing.*",), groups=("billing-*",),
        deny_read=("payroll.*", "hr"), deny_write=("billing.ledger",), deny_admin=("*",),
        deny_groups=("ops-*",), requests_per_sec=50.0,
    )  # fmt: skip
    assert ops.deny_read == ops.deny_write == ops.deny_admin == ops.deny_groups == ()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (('deny_read = ["payroll.*", "hr"]', 'deny_read = ["pay*roll"]'),
         "auth.user[0].deny_read[0] 'pay*roll': '*' may only end a pattern"),
        (('deny_write = ["billing.ledger"]', 'deny_write = [""]'),
         "auth.user[0].deny_write[0] must be a non-empty string"),
        (('deny_admin = ["*"]', 'deny_admin = "*"'), "auth.user[0].deny_admin must be list"),
        (('deny_groups = ["ops-*"]', "deny_groups = [7]"),
         "auth.user[0].deny_groups[0] must be a non-empty string"),
        (('deny_groups = ["ops-*"]', 'deny_group = ["ops-*"]'),
         "auth.user[0].deny_group is not a known key"),
    ],
)  # fmt: skip
def test_bad_deny_rules_are_named(tmp_path: Path, edit: tuple[str, str], problem: str) -> None:
    old, new = edit
    assert old in FENCED
    message = load_error(tmp_path, GOOD + FENCED.replace(old, new, 1))
    assert problem in message and "\n" not in message


def test_a_user_without_deny_rules_keeps_the_fingerprint_of_builds_before_them() -> None:
    """Mid rolling upgrade, nodes of both builds hold the same file: cluster status
    must not warn that their [auth] differs. The digest is what the build before
    deny rules (commit a5fd67d) gives this [auth]."""
    ops = User("ops", "tok-o", admin=("*",), cluster=True)
    billing = User("billing", "tok-b", read=("b.*",), expires_at_ms=1_800_000_000_000)
    assert AuthConfig(client_tokens=("x",), users=(ops, billing)).fingerprint == "9f08fa6a186e"
    # A deny rule is a change of the user's, which the fingerprint shows.
    for key in ("deny_read", "deny_write", "deny_admin", "deny_groups"):
        fenced = dataclasses.replace(billing, **{key: ("b.secret",)})
        assert AuthConfig(client_tokens=("x",), users=(ops, fenced)).fingerprint != (
            "9f08fa6a186e"
        ), key


def test_users_known_by_certificate_need_verified_client_certificates(tmp_path: Path) -> None:
    by_cert = USERS.replace('token = "tok-o"', 'tls_names = ["ops.clients.example"]')
    assert "tls_names needs [tls] client_auth = true" in load_error(tmp_path, GOOD + by_cert)
    empty = USERS.replace('token = "tok-o"', 'tls_names = [""]')
    assert "auth.user[1].tls_names[0] must be a non-empty string" in load_error(
        tmp_path, GOOD + empty
    )
    twice = by_cert.replace(
        'token = "tok-b"', 'token = "tok-b"\ntls_names = ["OPS.clients.example"]'
    )
    assert "auth.user[1].tls_names 'ops.clients.example' already names another user" in load_error(
        tmp_path, GOOD + twice
    )


def test_a_token_listed_twice_is_refused(tmp_path: Path) -> None:
    twice = GOOD + '[auth]\nclient_tokens = ["a", "a"]\n'
    assert "auth.client_tokens lists a token twice" in load_error(tmp_path, twice)
    shared = USERS.replace('peer_token = "p"', 'peer_token = "p"\nclient_tokens = ["tok-o"]')
    assert "auth.user[1].token is already in use" in load_error(tmp_path, GOOD + shared)


def test_cpu_latency_qos_is_optional_and_checked(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).cpu_latency_qos_us is None
    with_qos = GOOD.replace('name = "local"', 'name = "local"\ncpu_latency_qos_us = 0')
    assert load_config(write(tmp_path, with_qos)).cpu_latency_qos_us == 0
    negative = with_qos.replace("cpu_latency_qos_us = 0", "cpu_latency_qos_us = -1")
    assert "cluster.cpu_latency_qos_us must be in [0, 2147483647]" in load_error(tmp_path, negative)
    flag = with_qos.replace("cpu_latency_qos_us = 0", "cpu_latency_qos_us = true")
    assert "cluster.cpu_latency_qos_us must be int" in load_error(tmp_path, flag)


def test_storage_defaults_to_leveled_compaction_and_checks_its_keys(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).storage == StorageConfig("level", 100)
    tiered = GOOD + '[storage]\nrocksdb_compaction = "universal"\n'
    tiered += "max_space_amplification_percent = 25\n"
    assert load_config(write(tmp_path, tiered)).storage == StorageConfig("universal", 25)
    fifo = GOOD + '[storage]\nrocksdb_compaction = "fifo"\n'
    assert "storage.rocksdb_compaction must be 'level' or 'universal', got 'fifo'" in load_error(
        tmp_path, fifo
    )
    zero = GOOD + "[storage]\nmax_space_amplification_percent = 0\n"
    assert "storage.max_space_amplification_percent must be > 0, got 0" in load_error(
        tmp_path, zero
    )
    typo = GOOD + '[storage]\ncompaction = "level"\n'
    assert "storage.compaction is not a known key" in load_error(tmp_path, typo)


def test_rocksdbs_open_files_are_a_setting_with_rocksdbs_least(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).storage.rocksdb_max_open_files == 384
    cfg = load_config(write(tmp_path, GOOD + "[storage]\nrocksdb_max_open_files = 5000\n"))
    assert cfg.storage == StorageConfig("level", 100, 5000)
    assert load_config(write(tmp_path, render_config(cfg))).storage == cfg.storage
    few = GOOD + "[storage]\nrocksdb_max_open_files = 19\n"
    assert "storage.rocksdb_max_open_files must be >= 20 (RocksDB's least), got 19" in (
        load_error(tmp_path, few)
    )


def test_max_log_format_is_optional_checked_and_caps_the_builds(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).log_format == LOG_FORMAT
    held = GOOD.replace('name = "local"', 'name = "local"\nmax_log_format = 1')
    assert load_config(write(tmp_path, held)).log_format == 1
    beyond = held.replace("max_log_format = 1", f"max_log_format = {LOG_FORMAT + 5}")
    assert load_config(write(tmp_path, beyond)).log_format == LOG_FORMAT  # the build's own
    zero = held.replace("max_log_format = 1", "max_log_format = 0")
    assert "cluster.max_log_format must be >= 1, got 0" in load_error(tmp_path, zero)


def test_render_round_trips(tmp_path: Path) -> None:
    cfg = ClusterConfig(
        name='we"ird',
        nodes=[
            NodeConfig("a", "127.0.0.1:1", "127.0.0.1", 1, tmp_path / "a", "127.0.0.1:3"),
            NodeConfig(
                "b",
                "127.0.0.1:2",
                "127.0.0.1",
                2,
                tmp_path / "b",
                None,
                {"a": "h:9"},
                peer_address="127.0.0.1:4",
            ),
        ],
        tick_ms=5,
        election_ticks=10,
        heartbeat_ticks=1,
        fsync=False,
        cpu_latency_qos_us=0,
        max_log_format=1,
        unsafe_follower_reads=True,
        limits=Limits(max_frame_bytes=2048, max_batch_bytes=1024),
        auth=AuthConfig(
            client_tokens=("x",),
            peer_token="y",
            users=(
                User(
                    "billing",
                    'tok"b',
                    read=("billing.*", "events"),
                    write=("billing.*",),
                    groups=("billing-*",),
                    deny_read=("billing.secret*", 'odd"name'),
                    deny_write=("events",),
                    deny_admin=("*",),
                    deny_groups=("billing-ops",),
                    requests_per_sec=5.0,
                ),
                User(
                    "ops",
                    "tok-o",
                    admin=("*",),
                    cluster=True,
                    produce_bytes_per_sec=1e6,
                    fetch_bytes_per_sec=4e6,
                    max_connections=3,
                    expires_at_ms=1_798_761_600_250,
                ),
            ),
        ),
        quotas=QuotaConfig(requests_per_sec=7.0, fetch_bytes_per_sec=1e5),
        storage=StorageConfig("universal", 30),
    )
    path = write(tmp_path, render_config(cfg))
    again = load_config(path)
    assert again.path == path
    assert dataclasses.replace(again, path=None) == cfg


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_client_connections", "0", "must be > 0, got 0"),
        ("max_client_connections", "-5", "must be > 0, got -5"),
        ("max_client_connections", '"many"', "must be int, got str 'many'"),
        ("max_client_connections", "2.5", "must be int, got float 2.5"),
        ("max_client_connections", "true", "must be int, got bool True"),
        ("connections_max_idle_ms", "-1", "must be >= 0, got -1"),  # 0 is allowed: never
        ("connections_max_idle_ms", "true", "must be int, got bool True"),
        ("connections_max_idle_ms", "1.5", "must be int, got float 1.5"),
        ("max_pending_connections", "0", "must be > 0, got 0"),  # 0 would refuse everyone
        ("max_pending_connections", '"1k"', "must be int, got str '1k'"),
        ("max_pending_connections_per_address", "-1", "must be >= 0, got -1"),  # 0: no share
        ("max_client_connections_per_address", "1.5", "must be int, got float 1.5"),
        ("max_connection_rate_per_address", "-3", "must be >= 0, got -3"),
        ("max_connection_rate", "-1", "must be >= 0, got -1"),
        ("hello_timeout_ms", "0", "must be > 0, got 0"),
        ("listen_backlog", '"128"', "must be int, got str '128'"),
        (
            "max_client_connections_per_address_overrides",
            '{ "gateway.example" = 10 }',
            "key 'gateway.example' is not an IP address or network (host names are not resolved)",
        ),
        (
            "max_client_connections_per_address_overrides",
            '{ "10.0.0.9" = -1 }',
            "['10.0.0.9'] must be an int >= 0, got -1",
        ),
        (
            "max_client_connections_per_address_overrides",
            '{ "10.0.0.9" = true }',
            "['10.0.0.9'] must be an int >= 0, got True",
        ),
        (
            "max_client_connections_per_address_overrides",
            '{ "::ffff:10.0.0.9" = 1, "10.0.0.9" = 2 }',  # one address, two spellings
            "names 10.0.0.9 twice",
        ),
        ("max_client_connections_per_address_overrides", "5", "must be dict, got int 5"),
    ],
)
def test_bad_connection_limits_are_refused_naming_the_key(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    text = GOOD + f"[limits]\n{key} = {value}\n"
    assert f"limits.{key} {problem}" in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("max_client_connections", 4096),
        ("max_pending_connections", 1024),
        ("max_pending_connections_per_address", 256),
        ("max_client_connections_per_address", 0),
        ("max_connection_rate_per_address", 0),
        ("max_connection_rate", 0),
        ("listen_backlog", 0),
        ("hello_timeout_ms", 10_000),
    ],
)
def test_connection_limits_default_values_and_round_trip(
    tmp_path: Path, key: str, default: int
) -> None:
    assert getattr(load_config(write(tmp_path, GOOD)).limits, key) == default
    cfg = load_config(write(tmp_path, GOOD + f"[limits]\n{key} = 1\n"))
    assert cfg.limits == Limits(**{key: 1})
    rendered = render_config(cfg)
    assert f"{key} = 1\n" in rendered
    again = load_config(write(tmp_path, rendered))
    assert getattr(again.limits, key) == 1


def test_per_address_overrides_are_canonical_addresses_and_round_trip(tmp_path: Path) -> None:
    text = GOOD + (
        "[limits]\nmax_client_connections_per_address = 8\n"
        'max_client_connections_per_address_overrides = { "10.0.0.9" = 500, '
        '"0:0::1" = 0, "::FFFF:192.0.2.1" = 3 }\n'
    )
    cfg = load_config(write(tmp_path, text))
    overrides = {"10.0.0.9": 500, "::1": 0, "192.0.2.1": 3}
    assert cfg.limits.max_client_connections_per_address_overrides == overrides
    # The limit for an address as a connection reports it, whatever its spelling.
    limit = AddressOverrides.of(cfg.limits).client_connections
    assert limit("10.0.0.9") == 500
    assert limit("::1") == 0  # its own: no limit
    assert limit("::ffff:192.0.2.1") == 3
    assert limit("10.0.0.10") == 8  # not overridden
    assert limit("memory") == 8  # not an IP: no override
    again = load_config(write(tmp_path, render_config(cfg)))
    assert again.limits == cfg.limits


def test_overrides_take_networks_and_the_most_specific_entry_wins(tmp_path: Path) -> None:
    """Each per-address key has its overrides table; a network's value applies to
    each address inside it, an address's own entry beats any network, and a
    longer prefix beats a shorter one, whatever the order in the file."""
    text = GOOD + (
        "[limits]\nmax_connection_rate_per_address = 10\n"
        "max_pending_connections_per_address = 4\n"
        'max_connection_rate_per_address_overrides = { "10.0.0.0/8" = 100, '
        '"10.1.0.0/16" = 0, "10.1.2.3" = 7, "fd00::/8" = 50 }\n'
        'max_pending_connections_per_address_overrides = { "192.0.2.0/24" = 64 }\n'
    )
    cfg = load_config(write(tmp_path, text))
    overrides = AddressOverrides.of(cfg.limits)
    rate = overrides.connection_rate
    assert rate("10.9.9.9") == 100
    assert rate("10.1.200.1") == 0  # the /16 beats the /8: no limit
    assert rate("10.1.2.3") == 7  # its own entry beats both
    assert rate("::ffff:10.9.9.9") == 100  # a dual-stack listener's view of it
    assert rate("fd12::1") == 50 and rate("fe80::1") == 10
    assert rate("11.0.0.1") == 10 and rate("memory") == 10
    assert overrides.pending_share("192.0.2.77") == 64
    assert overrides.pending_share("10.9.9.9") == 4  # the rate's table is its own
    assert overrides.client_connections("192.0.2.77") == 0
    again = load_config(write(tmp_path, render_config(cfg)))
    assert again.limits == cfg.limits


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('{ "10.0.0.1/8" = 5 }', "resolved): 10.0.0.1/8 has host bits set"),
        ('{ "example.com" = 5 }', "host names are not resolved"),
        ('{ "10.0.0.0/8" = -1 }', "['10.0.0.0/8'] must be an int >= 0, got -1"),
        ('{ "10.0.0.0/8" = 1, "10.0.0.0/08" = 2 }', "names 10.0.0.0/8 twice"),
    ],
)
def test_bad_override_keys_and_values_are_refused_naming_the_table(
    tmp_path: Path, table: str, problem: str
) -> None:
    text = GOOD + f"[limits]\nmax_pending_connections_per_address_overrides = {table}\n"
    with pytest.raises(ConfigError, match="max_pending_connections_per_address_overrides") as info:
        load_config(write(tmp_path, text))
    assert problem in str(info.value)


def test_connections_max_idle_ms_defaults_to_ten_minutes_and_zero_switches_it_off(
    tmp_path: Path,
) -> None:
    assert load_config(write(tmp_path, GOOD)).limits.connections_max_idle_ms == 600_000
    cfg = load_config(write(tmp_path, GOOD + "[limits]\nconnections_max_idle_ms = 0\n"))
    assert cfg.limits == Limits(connections_max_idle_ms=0)
    again = load_config(write(tmp_path, render_config(cfg)))
    assert again.limits.connections_max_idle_ms == 0


def test_revoked_grace_is_a_non_negative_number_of_auth_and_round_trips(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).auth.revoked_grace_s == 5.0
    for text, expected in (("0", 0.0), ("2", 2.0), ("0.25", 0.25)):
        cfg = load_config(write(tmp_path, GOOD + f"[auth]\nrevoked_grace_s = {text}\n"))
        assert cfg.auth.revoked_grace_s == expected
        assert not cfg.auth.authenticates_clients  # the grace alone turns nothing on
        assert load_config(write(tmp_path, render_config(cfg))).auth == cfg.auth
    for bad in ("-1", "-0.5", "inf", "nan", '"5"', "true"):
        message = load_error(tmp_path, GOOD + f"[auth]\nrevoked_grace_s = {bad}\n")
        assert "auth.revoked_grace_s must be" in message, message
    with_users = GOOD + USERS.replace('peer_token = "p"', 'peer_token = "p"\nrevoked_grace_s = 1')
    again = load_config(write(tmp_path, render_config(load_config(write(tmp_path, with_users)))))
    assert again.auth.revoked_grace_s == 1.0 and len(again.auth.users) == 2
