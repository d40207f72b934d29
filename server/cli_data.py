"""Data-path commands: ``topic``, ``produce``, ``consume``, ``group`` and ``bench``.

They are thin shells over ``raftlog.client`` (they never import the server's
internals), so they work against any reachable cluster. Every command takes
``--config PATH`` (default ./cluster.toml) or ``--bootstrap HOST:PORT,...``.
Exit codes (see cli_common): 0 ok, 1 error reply from the cluster, 2 usage
error, 3 cluster unreachable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.bench import PAYLOADS
from raftlog.client.compression import CODECS
from raftlog.client.consumer import Consumer
from raftlog.client.producer import Delivery, Producer
from raftlog.client.protocol import (
    CONSISTENCIES,
    EAGER,
    LINEARIZABLE,
    REBALANCE_PROTOCOLS,
    SERIALIZABLE,
    Record,
)
from raftlog.log.metadata import CLEANUP_POLICIES

from .cli_common import (
    bootstrap_addresses,
    client_credential,
    client_tls,
    cluster_options,
    metrics_addresses,
    run_client,
)
from .cli_time import DateTime, Duration, now_ms

_TIMEOUT_OPTION = click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Per-request deadline in seconds (retries included).",
)


def _client(config: Path | None, bootstrap: str | None, timeout: float) -> AsyncClient:
    return AsyncClient(
        bootstrap_addresses(config, bootstrap),
        request_timeout=timeout,
        tls=client_tls(),
        credential=client_credential(),
    )


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


# ---------------------------------------------------------------- topic


@click.group()
def topic() -> None:
    """Create, list, describe, alter and delete topics."""


def _config_options(*, removable: bool) -> Any:
    """The topic config options (log/metadata.py TOPIC_CONFIG_KEYS); ``removable``
    (topic alter): 0 removes a setting."""
    remove = "; 0 removes the limit" if removable else ""
    reset = "; 0 restores the default" if removable else ""
    minimum = 0 if removable else 1
    options = [
        click.option("--retention-bytes", type=click.IntRange(min=minimum), default=None,
                     help=f"Keep at most this many bytes per partition{remove}."),
        click.option("--retention-ms", type=click.IntRange(min=minimum), default=None,
                     help=f"Delete batches older than this many milliseconds{remove}."),
        click.option("--cleanup-policy", type=click.Choice(CLEANUP_POLICIES), default=None,
                     help="compact: keep only the latest record of each key (see the "
                     "README's \"Compacted topics\"); delete (the default): keep every record "
                     "until retention removes it."),
        click.option("--delete-retention-ms", type=click.IntRange(min=minimum), default=None,
                     help="Compacted topics: how long a tombstone (a record with no value) "
                     f"stays readable; default a day{reset}."),
        click.option("--min-compaction-lag-ms", type=click.IntRange(min=minimum), default=None,
                     help="Compacted topics: never compact records younger than this"
                     f"{remove}."),
        click.option("--max-compaction-lag-ms", type=click.IntRange(min=minimum), default=None,
                     help="Compacted topics: sweep once the oldest record not yet swept is "
                     f"this old, however few records are new{remove}."),
        click.option("--min-cleanable-dirty-ratio",
                     type=click.FloatRange(min=0.0, max=1.0, min_open=not removable),
                     default=None,
                     help="Compacted topics: sweep when records new since the last sweep are "
                     f"this share of the partition (node default 0.5){reset}."),
        click.option("--max-message-bytes", type=click.IntRange(min=minimum), default=None,
                     help="The largest produce batch the topic takes, in bytes (Kafka's "
                     "max.message.bytes), at most the nodes' [limits] max_batch_bytes; "
                     f"producers keep their batches under it{remove}."),
    ]  # fmt: skip

    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _topic_config(**given: Any) -> dict[str, Any]:
    """The topic config of the options given; 0 (``topic alter`` only, create refuses
    it) becomes None: remove that setting."""
    return {key: value or None for key, value in given.items() if value is not None}


@topic.command("create")
@click.argument("name")
@click.option("--partitions", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--replicas", type=click.IntRange(min=1), default=3, show_default=True)
@_config_options(removable=False)
@cluster_options
@_TIMEOUT_OPTION
def topic_create(
    name: str,
    partitions: int,
    replicas: int,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
    **settings: Any,
) -> None:
    """Create topic NAME (returns once every partition has a leader)."""
    topic_config = _topic_config(**settings)
    client = _client(config, bootstrap, timeout)

    async def main() -> dict[str, Any]:
        async with client:
            return await client.create_topic(name, partitions, replicas, topic_config or None)

    result = run_client(main)
    click.echo(
        f"created topic {name}: {len(result.get('partitions') or [])} partition(s), "
        f"{replicas} replica(s)"
    )


@topic.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@cluster_options
@_TIMEOUT_OPTION
def topic_list(as_json: bool, config: Path | None, bootstrap: str | None, timeout: float) -> None:
    """List topic names."""
    client = _client(config, bootstrap, timeout)

    async def main() -> list[str]:
        async with client:
            return await client.list_topics()

    names = run_client(main)
    if as_json:
        _echo_json(names)
    else:
        for name in names:
            click.echo(name)


@topic.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the raw description as JSON.")
@cluster_options
@_TIMEOUT_OPTION
def topic_describe(
    name: str, as_json: bool, config: Path | None, bootstrap: str | None, timeout: float
) -> None:
    """Partitions of NAME: replicas, leader, term, offsets."""
    client = _client(config, bootstrap, timeout)

    async def main() -> dict[str, Any]:
        async with client:
            return await client.describe_topic(name)

    info = run_client(main)
    if as_json:
        _echo_json(info)
        return
    click.echo(f"topic {info.get('name', name)}  config={info.get('config') or {}}")
    click.echo(f"{'PART':>4} {'LEADER':>8} {'TERM':>5} {'START':>10} {'END':>10}  REPLICAS")
    for p in info.get("partitions") or []:
        click.echo(
            f"{p.get('partition', '?'):>4} {p.get('leader') or '-':>8} {p.get('term', '-'):>5} "
            f"{p.get('start_offset', '-'):>10} {p.get('end_offset', '-'):>10}  "
            f"{','.join(p.get('replicas') or [])}"
        )


@topic.command("alter")
@click.argument("name")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Grow to this many partitions (never fewer). Keys map to new partitions from now on.",
)
@_config_options(removable=True)
@cluster_options
@_TIMEOUT_OPTION
def topic_alter(
    name: str,
    partitions: int | None,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
    **settings: Any,
) -> None:
    """Add partitions to NAME and/or change its config (takes effect at once)."""
    topic_config = _topic_config(**settings)
    if partitions is None and not topic_config:
        raise click.UsageError(
            "nothing to alter: give --partitions, --retention-*, --cleanup-policy or "
            "a compaction setting (--delete-retention-ms, --min/max-compaction-lag-ms, "
            "--min-cleanable-dirty-ratio)"
        )
    client = _client(config, bootstrap, timeout)

    async def main() -> dict[str, Any]:
        async with client:
            return await client.alter_topic(name, partitions=partitions, config=topic_config)

    result = run_client(main)
    settings = ", ".join(f"{k}={v}" for k, v in sorted((result.get("config") or {}).items()))
    click.echo(
        f"altered topic {name}: {len(result.get('partitions') or [])} partition(s)"
        f"{'; ' + settings if settings else '; no retention limit'}"
    )


@topic.command("delete")
@click.argument("name")
@cluster_options
@_TIMEOUT_OPTION
def topic_delete(name: str, config: Path | None, bootstrap: str | None, timeout: float) -> None:
    """Delete topic NAME and its data."""
    client = _client(config, bootstrap, timeout)

    async def main() -> None:
        async with client:
            await client.delete_topic(name)

    run_client(main)
    click.echo(f"deleted topic {name}")


# ---------------------------------------------------------------- produce


def _parse_headers(pairs: tuple[str, ...]) -> dict[str, bytes] | None:
    headers: dict[str, bytes] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not k=v", param_hint="--headers")
        headers[key] = value.encode()
    return headers or None


async def _stdin_lines(stream: BinaryIO) -> Any:
    """Lines of ``stream`` without their newline, read in chunks off the event loop."""
    read = getattr(stream, "read1", stream.read)
    pending = b""
    while True:
        chunk = await trio.to_thread.run_sync(read, 65536)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield line.rstrip(b"\r")
    if pending:
        yield pending.rstrip(b"\r")


def _consistency_option(help_text: str) -> Any:
    """``--consistency`` for commands that read partitions (client/replica_reads.py)."""
    return click.option(
        "--consistency",
        type=click.Choice(CONSISTENCIES),
        default=LINEARIZABLE,
        show_default=True,
        help=help_text,
    )


def _compression_option(help_text: str) -> Any:
    """``--compression`` for commands that produce with a batching Producer."""
    return click.option(
        "--compression",
        type=click.Choice(list(CODECS)),
        default="none",
        show_default=True,
        help=help_text,
    )


@click.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--key", default=None, help="Key of every record (picks the partition).")
@click.option(
    "--partition",
    type=click.IntRange(min=0),
    default=None,
    help="Partition of every record (default: by key, else round-robin).",
)
@click.option(
    "--headers",
    "header_pairs",
    multiple=True,
    metavar="K=V",
    help="A header of every record; repeatable.",
)
@click.option(
    "--key-separator",
    default=None,
    metavar="SEP",
    help="Each line is KEY SEP VALUE (Kafka's parse.key with key.separator).",
)
@click.option(
    "--null-value",
    default=None,
    metavar="TEXT",
    help="A value equal to TEXT is sent as no value: a tombstone, which deletes its key "
    "in a compacted topic (Kafka's null.marker).",
)
@click.option("--verbose", is_flag=True, help="Print partition and offset of every record.")
@click.option(
    "--linger",
    type=float,
    default=0.002,
    show_default=True,
    help="Seconds to wait for more lines before sending a batch.",
)
@_compression_option("Compress each batch (consumers decompress whatever they read).")
@cluster_options
@_TIMEOUT_OPTION
def produce(
    topic_name: str,
    key: str | None,
    partition: int | None,
    header_pairs: tuple[str, ...],
    key_separator: str | None,
    null_value: str | None,
    verbose: bool,
    linger: float,
    compression: str,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Produce one record per line of stdin to TOPIC."""
    headers = _parse_headers(header_pairs)
    if key_separator is not None and (key is not None or not key_separator):
        raise click.UsageError("--key-separator needs a non-empty SEP and no --key")
    separator = key_separator.encode() if key_separator else None
    null_marker = null_value.encode() if null_value is not None else None
    client = _client(config, bootstrap, timeout)
    # The bytes under stdin (click 8.2 deprecates get_binary_stream for this).
    stdin = sys.stdin.buffer

    async def main() -> tuple[int, dict[int, int]]:
        sent: list[Delivery] = []
        per_partition: dict[int, int] = {}
        reported = 0

        def report_done(final: bool) -> None:
            # Report in input order, as far as records are acknowledged; the
            # first failure raises (exit code 1 or 3).
            nonlocal reported
            while reported < len(sent) and (final or sent[reported].done()):
                md = sent[reported].result()
                per_partition[md.partition] = per_partition.get(md.partition, 0) + 1
                if verbose:
                    click.echo(f"partition={md.partition} offset={md.offset}")
                reported += 1

        async with (
            client,
            Producer(
                client, linger=linger, delivery_timeout=timeout, compression=compression
            ) as producer,
        ):
            await client.partitions_for(topic_name)  # fail fast on an unknown topic
            number = 0
            async for line in _stdin_lines(stdin):
                number += 1
                line_key: bytes | str | None = key
                value: bytes | None = line
                if separator is not None:
                    line_key, sep, value = line.partition(separator)
                    if not sep:
                        raise click.UsageError(
                            f"line {number} has no key separator {key_separator!r}"
                        )
                if value == null_marker:
                    value = None
                sent.append(await producer.send(topic_name, value, line_key, partition, headers))
                report_done(final=False)
            await producer.flush()
        report_done(final=True)
        return len(sent), per_partition

    count, per_partition = run_client(main)
    spread = ", ".join(f"p{p}={n}" for p, n in sorted(per_partition.items()))
    click.echo(
        f"produced {count} record(s) to {topic_name}" + (f" ({spread})" if spread else ""),
        err=verbose,
    )


# ---------------------------------------------------------------- consume


def _format_record(
    topic_name: str, partition: int, record: Record, fmt: str, key_separator: str | None = None
) -> str:
    if fmt == "json":
        return json.dumps(
            {
                "topic": topic_name,
                "partition": partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
                "key": record.key,
                "value": record.value,
                "headers": record.headers,
            },
            default=_json_default,
        )
    # A tombstone (no value) prints as "null", as Kafka's console consumer does.
    value = "null" if record.value is None else record.value.decode("utf-8", "backslashreplace")
    if key_separator is None:
        return value
    key = "null" if record.key is None else record.key.decode("utf-8", "backslashreplace")
    return f"{key}{key_separator}{value}"


@click.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option(
    "--partition",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="Partition to read; repeatable (default: all, or the group's assignment).",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="Start at each partition's first offset (ignores the group's commit).",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=None,
    help="Start at this offset (in every selected partition).",
)
@click.option(
    "--since",
    type=Duration(),
    default=None,
    metavar="DURATION",
    help="Start at the records appended in the last DURATION (90s, 15m, 1h30m, 2d, PT1H).",
)
@click.option(
    "--from-time",
    type=DateTime(),
    default=None,
    metavar="DATETIME",
    help="Start at the first record appended at or after this ISO 8601 time "
    "(2026-11-23T09:00:00Z; local time without an offset).",
)
@click.option("--follow", is_flag=True, help="Keep waiting for new records (Ctrl-C to stop).")
@click.option(
    "--group",
    default=None,
    help="Consumer group: start at its committed offset, commit after printing; "
    "without --partition, join the group and read the partitions it assigns.",
)
@click.option(
    "--instance-id",
    default=None,
    help="With --group: a static member id (Kafka's group.instance.id). On exit the "
    "command commits but does not leave; run again with the same id within the "
    "session timeout, it gets the same partitions without a rebalance.",
)
@click.option(
    "--rebalance",
    type=click.Choice(REBALANCE_PROTOCOLS),
    default=EAGER,
    show_default=True,
    help="With --group and no --partition: cooperative keeps reading the partitions "
    "that stay with this member while the group rebalances (Kafka KIP-429); eager "
    "stops them all until the new assignment.",
)
@click.option(
    "--max",
    "max_records",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many records.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the value per line; json: one object per line.",
)
@click.option(
    "--key-separator",
    default=None,
    metavar="SEP",
    help="text format: print KEY SEP VALUE per line (Kafka's print.key); a missing key "
    "or value (a tombstone) prints as null.",
)
@_consistency_option(
    "linearizable: read from each partition's leader, up to everything acknowledged. "
    "serializable: read from any replica's copy (--prefer-replica first): the same "
    "records at the same offsets, possibly later, and still readable from a node cut "
    "off from the leader."
)
@click.option(
    "--prefer-replica",
    default=None,
    metavar="NODE",
    help="With --consistency serializable: read from this node where it holds a replica.",
)
@cluster_options
@_TIMEOUT_OPTION
def consume(
    topic_name: str,
    partitions: tuple[int, ...],
    from_beginning: bool,
    offset: int | None,
    since: int | None,
    from_time: int | None,
    follow: bool,
    group: str | None,
    instance_id: str | None,
    rebalance: str,
    max_records: int | None,
    fmt: str,
    key_separator: str | None,
    consistency: str,
    prefer_replica: str | None,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Print records of TOPIC (by default from the group's commit, else the beginning).

    With --group and no --partition the command joins the consumer group and
    reads only the partitions the group assigns it (others of the group share
    the topic); on exit it commits and leaves the group.

    Without --follow it stops once it has read up to the end offsets it saw.

    --since and --from-time go by the time the leader appended each record: a
    partition whose records are all older starts at its end.
    """
    starts = [from_beginning or None, offset, since, from_time]
    if sum(x is not None for x in starts) > 1:
        raise click.UsageError("--from-beginning, --offset, --since and --from-time are exclusive")
    start_ms = from_time if since is None else now_ms() - since
    if instance_id is not None and (group is None or partitions):
        raise click.UsageError("--instance-id needs --group and no --partition")
    if rebalance != EAGER and (group is None or partitions):
        raise click.UsageError("--rebalance needs --group and no --partition")
    if prefer_replica is not None and consistency != SERIALIZABLE:
        raise click.UsageError("--prefer-replica needs --consistency serializable")
    client = _client(config, bootstrap, timeout)
    client.prefer_replica = prefer_replica

    async def main() -> int:
        async with client:
            consumer = Consumer(
                client,
                group,
                topic_name,
                list(partitions) or None,
                max_wait=1.0 if follow else 0.0,
                group_instance_id=instance_id,
                consistency=consistency,
                rebalance=rebalance,
            )
            try:
                return await _consume_loop(
                    consumer, client, topic_name, fmt, max_records, follow,
                    offset, from_beginning, start_ms, key_separator=key_separator,
                )  # fmt: skip
            finally:
                # Group-managed: commit and leave (the group rebalances at once);
                # a static member (--instance-id) commits and stays.
                await consumer.close()

    printed = run_client(main)
    click.echo(f"consumed {printed} record(s)", err=True)


async def _consume_loop(
    consumer: Consumer,
    client: AsyncClient,
    topic_name: str,
    fmt: str,
    max_records: int | None,
    follow: bool,
    offset: int | None,
    from_beginning: bool,
    start_ms: int | None,
    *,
    key_separator: str | None = None,
) -> int:
    printed = 0
    group = consumer.group
    await consumer.start()
    if start_ms is not None:
        await consumer.seek_to_time(start_ms)
    for p in consumer.partitions:
        if offset is not None:
            consumer.seek(p, offset)
        elif from_beginning:
            offsets = await client.list_offsets(
                topic_name, p, consistency=consumer.consistency
            )
            consumer.seek(p, offsets.start_offset)
    out = sys.stdout
    while max_records is None or printed < max_records:
        batch = await consumer.poll()
        if max_records is not None and printed + len(batch) > max_records:
            # Positions must not pass what we print (a group commits them):
            # rewind each partition to its first unprinted record.
            cut = max_records - printed
            rewind: dict[int, int] = {}
            for p, record in batch[cut:]:
                rewind.setdefault(p, record.offset)
            batch = batch[:cut]
            for p, first_unprinted in rewind.items():
                consumer.seek(p, first_unprinted)
        for p, record in batch:
            out.write(_format_record(topic_name, p, record, fmt, key_separator) + "\n")
        printed += len(batch)
        out.flush()
        if group is not None and batch:
            await consumer.commit()
        if not follow and not batch and consumer.at_end():
            break
    return printed


# ---------------------------------------------------------------- bench


@click.group()
def bench() -> None:
    """Load generators: produce and consume throughput and latency."""


def _bench_options(fn: Any) -> Any:
    options = [
        click.option(
            "--topic",
            "topic_name",
            default="bench",
            show_default=True,
            help="Topic (created if missing).",
        ),
        click.option("--partitions", type=click.IntRange(min=1), default=3, show_default=True),
        click.option("--replicas", type=click.IntRange(min=1), default=3, show_default=True),
        click.option("--record-size", type=click.IntRange(min=0), default=100, show_default=True),
        click.option(
            "--duration",
            type=float,
            default=10.0,
            show_default=True,
            help="Seconds to run (unless --count).",
        ),
        click.option(
            "--count",
            type=click.IntRange(min=1),
            default=None,
            help="Total records instead of a duration.",
        ),
        click.option(
            "--procs",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="OS processes generating load.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@bench.command("produce")
@_bench_options
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Concurrent clients (single mode, default 64) or batching producers "
    "(batch mode, default 4), over all procs.",
)
@click.option(
    "--batch/--single",
    "batched",
    default=False,
    show_default=True,
    help="Batching Producer, or one record per produce request.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256 * 1024, show_default=True)
@click.option("--linger", type=float, default=0.005, show_default=True)
@click.option(
    "--buffer-memory",
    type=click.IntRange(min=1),
    default=None,
    help="Bytes each batching Producer holds unacknowledged (Kafka's buffer.memory); "
    "latency includes waiting in it.  [default: 2 batches per partition]",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Offered load in records/s over all procs (like kafka-producer-perf-test "
    "--throughput): latency at a load the cluster sustains.  [default: unpaced]",
)
@click.option(
    "--payload",
    type=click.Choice(list(PAYLOADS)),
    default="fixed",
    show_default=True,
    help="Record contents: one random value repeated (as kafka-producer-perf-test), "
    "a fresh random value per record (incompressible), or JSON-like events.",
)
@_compression_option("The batching Producer's batch compression (--batch only).")
@cluster_options
def bench_produce(
    config: Path | None, bootstrap: str | None, as_json: bool, **options: Any
) -> None:
    """Produce load; reports records/s, MB/s and ack latency p50/p99/p999."""
    if options["concurrency"] is None:
        options["concurrency"] = 4 if options["batched"] else 64
    if options["compression"] != "none" and not options["batched"]:
        raise click.UsageError("--compression compresses Producer batches: add --batch")
    _run_bench("produce", config, bootstrap, as_json, options)


@bench.command("consume")
@_bench_options
@click.option(
    "--fill/--no-fill",
    default=True,
    show_default=True,
    help="Produce --count records first if the partitions hold fewer.",
)
@_consistency_option("serializable: fetch from any replica (spread by client id), not the leaders.")
@cluster_options
def bench_consume(
    config: Path | None, bootstrap: str | None, as_json: bool, **options: Any
) -> None:
    """Fetch load; reports records/s and MB/s."""
    _run_bench("consume", config, bootstrap, as_json, options)


def _run_bench(
    mode: str, config: Path | None, bootstrap: str | None, as_json: bool, options: dict[str, Any]
) -> None:
    from raftlog.client.bench import BenchConfig, format_report, run_bench

    addresses = bootstrap_addresses(config, bootstrap)
    cfg = BenchConfig(
        mode=mode,
        bootstrap=addresses,
        topic=options.pop("topic_name"),
        tls=client_tls(),
        credential=client_credential(),
        metrics=metrics_addresses(config, bootstrap),
        **options,
    )
    report = run_client(lambda: run_bench(cfg, progress=not as_json))
    if as_json:
        _echo_json(report)
    else:
        click.echo(format_report(report))
