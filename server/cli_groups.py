"""``raftlog group``: list, describe, delete, and reset the offsets of consumer groups.

    raftlog group list
    raftlog group describe NAME
    raftlog group delete NAME [--topic T]
    raftlog group reset-offsets NAME --to-earliest | --to-latest | --to-offset N
                                     | --shift-by N | --to-datetime T | --by-duration D
                                     [--partition P ...] [--execute]

A reset, like Kafka's ``kafka-consumer-groups --reset-offsets``, prints its plan
and changes nothing unless given ``--execute``, and only resets a group that has
no members: a live member would go on from its own positions and commit over the
reset. Commits are fenced by generation (log/partition.py), so the reset joins
the group as its only member, which claims every partition with a new
generation, commits the new offsets with it, and leaves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from raftlog.client.aio import AsyncClient
from raftlog.client.consumer import Consumer
from raftlog.client.models import DeletedGroup
from raftlog.client.protocol import EAGER

from .cli_common import cluster_options, run_client
from .cli_data import _TIMEOUT_OPTION, _client, _echo_json
from .cli_time import DateTime, Duration, format_ms, now_ms

EXIT_GROUP_ACTIVE = 1


@click.group("group")
def group_cli() -> None:
    """Consumer groups: list, membership, assignment, lag, offset resets, deletion."""


@group_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@cluster_options
@_TIMEOUT_OPTION
def group_list(as_json: bool, config: Path | None, bootstrap: str | None, timeout: float) -> None:
    """Every consumer group the coordinator knows: topic, state, generation, members."""
    client = _client(config, bootstrap, timeout)

    async def main() -> dict[str, Any]:
        async with client:
            return await client.request("group_list", idempotent=True)

    listed = run_client(main)
    if as_json:
        _echo_json(listed)
        return
    click.echo(f"{'GROUP':<32} {'TOPIC':<32} {'STATE':<12} {'GENERATION':>10} {'MEMBERS':>7}")
    for g in listed["groups"]:
        click.echo(
            f"{g['group']:<32} {g['topic'] or '-':<32} {g['state']:<12} "
            f"{g['generation']:>10} {len(g['members']):>7}"
        )


@group_cli.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@cluster_options
@_TIMEOUT_OPTION
def group_describe(
    name: str, as_json: bool, config: Path | None, bootstrap: str | None, timeout: float
) -> None:
    """Members, generation and assignment of group NAME (from the coordinator),
    with each partition's committed offset, end offset and lag."""
    client = _client(config, bootstrap, timeout)

    async def main() -> dict[str, Any]:
        async with client:
            described = await client.request("group_describe", idempotent=True, group=name)
            owner = {p: m["member_id"] for m in described["members"] for p in m["partitions"]}
            parts = []
            topic_name = described.get("topic")
            if topic_name is not None:
                for p in range(await client.partitions_for(topic_name)):
                    committed = await client.committed(name, topic_name, p)
                    end = (await client.list_offsets(topic_name, p)).end_offset
                    lag = None if committed is None else max(0, end - committed)
                    parts.append(
                        {"partition": p, "member_id": owner.get(p), "committed": committed,
                         "end_offset": end, "lag": lag}
                    )  # fmt: skip
            return {**described, "partitions": parts}

    described = run_client(main)
    if as_json:
        _echo_json(described)
        return
    click.echo(
        f"group {described['group']}  topic {described['topic'] or '-'}  "
        f"state {described['state']}  generation {described['generation']}  "
        f"coordinator {described['coordinator']}"
    )
    click.echo(f"{'MEMBER':<40} {'CLIENT':<24} {'REBALANCE':<11} PARTITIONS")
    for m in described["members"]:
        parts_text = ",".join(str(p) for p in m["partitions"]) or "-"
        protocol = m.get("rebalance") or EAGER  # a node from before cooperative rebalancing
        click.echo(f"{m['member_id']:<40} {m['client_id']:<24} {protocol:<11} {parts_text}")
    if described.get("withheld"):
        # A cooperative rebalance between its two steps: the previous owners are
        # giving these up; the next generation hands them out.
        withheld = ",".join(str(p) for p in described["withheld"])
        click.echo(f"withheld (moving to a new owner): {withheld}")
    if described["partitions"]:
        click.echo(f"{'PARTITION':<10} {'COMMITTED':>10} {'END':>10} {'LAG':>8}  MEMBER")
        for p in described["partitions"]:
            committed = "-" if p["committed"] is None else p["committed"]
            lag = "-" if p["lag"] is None else p["lag"]
            click.echo(
                f"{p['partition']:<10} {committed:>10} {p['end_offset']:>10} {lag:>8}  "
                f"{p['member_id'] or '-'}"
            )


@group_cli.command("delete")
@click.argument("name")
@click.option(
    "--topic", "topic_name",
    help="The group's topic: needed only for a group that never formed a generation "
    "(its consumers committed by hand), whose offsets on this topic are deleted.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@cluster_options
@_TIMEOUT_OPTION
def group_delete(
    name: str,
    topic_name: str | None,
    as_json: bool,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Delete group NAME and its committed offsets (it must have no members).

    A consumer that joins the name afterwards starts with no committed offsets.
    Run it again if it stopped half way: it finishes the deletion."""
    client = _client(config, bootstrap, timeout)

    async def main() -> DeletedGroup:
        async with client:
            return await client.delete_group(name, topic=topic_name)

    result = run_client(main)
    if as_json:
        _echo_json(
            {"group": result.group, "topic": result.topic, "generation": result.generation,
             "deleted": list(result.deleted), "kept": list(result.kept)}
        )  # fmt: skip
    else:
        click.echo(
            f"deleted group {result.group} (topic {result.topic}): committed offsets "
            f"removed from {len(result.deleted)} partition(s)"
        )
    if result.kept:
        kept = ",".join(str(p) for p in result.kept)
        raise click.ClickException(
            f"group {name!r} was joined again during the deletion: partitions {kept} "
            "keep the new generation's offsets"
        )


@group_cli.command("reset-offsets")
@click.argument("name")
@click.option("--topic", "topic_name", help="The group's topic (default: the one it consumes).")
@click.option("--to-earliest", "to", flag_value="earliest", help="Each partition's first offset.")
@click.option("--to-latest", "to", flag_value="latest", help="Each partition's end offset.")
@click.option(
    "--to-offset", type=click.IntRange(min=0), help="This offset (clamped to what is retained)."
)
@click.option(
    "--shift-by", type=int, help="Move each committed offset by N (negative: back; clamped)."
)
@click.option(
    "--to-datetime", type=DateTime(), default=None, metavar="DATETIME",
    help="Each partition's first record appended at or after this ISO 8601 time "
    "(local time without an offset); its end if all are older.",
)  # fmt: skip
@click.option(
    "--by-duration", type=Duration(), default=None, metavar="DURATION",
    help="Like --to-datetime, DURATION before now (15m, 1h30m, 2d, PT1H).",
)  # fmt: skip
@click.option(
    "--partition", "partitions", type=click.IntRange(min=0), multiple=True,
    help="Reset only this partition; repeatable (default: all).",
)  # fmt: skip
@click.option("--execute", is_flag=True, help="Commit the new offsets (default: only show them).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@cluster_options
@_TIMEOUT_OPTION
def group_reset_offsets(
    name: str,
    topic_name: str | None,
    to: str | None,
    to_offset: int | None,
    shift_by: int | None,
    to_datetime: int | None,
    by_duration: int | None,
    partitions: tuple[int, ...],
    execute: bool,
    as_json: bool,
    config: Path | None,
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Set group NAME's committed offsets. Without --execute, print the plan only.

    The group must have no members (stop its consumers first)."""
    targets = [t for t in (to, to_offset, shift_by, to_datetime, by_duration) if t is not None]
    if len(targets) != 1:
        raise click.UsageError(
            "give exactly one of --to-earliest, --to-latest, --to-offset, --shift-by, "
            "--to-datetime, --by-duration"
        )
    at_ms = to_datetime if by_duration is None else now_ms() - by_duration
    client = _client(config, bootstrap, timeout)

    async def main() -> dict[str, Any]:
        async with client:
            described = await client.request("group_describe", idempotent=True, group=name)
            if described["members"]:
                raise click.ClickException(
                    f"group {name!r} has {len(described['members'])} active member(s): "
                    "stop its consumers first (a live member would commit over the reset)"
                )
            topic = topic_name or described.get("topic")
            if topic is None:
                raise click.UsageError(f"group {name!r} is not known: name its --topic")
            count = await client.partitions_for(topic)
            chosen = sorted(set(partitions)) if partitions else list(range(count))
            if any(p >= count for p in chosen):
                raise click.UsageError(f"topic {topic!r} has partitions 0..{count - 1}")
            plan = [
                await _plan_partition(client, name, topic, p, to, to_offset, shift_by, at_ms)
                for p in chosen
            ]
            if execute:
                await _commit_plan(client, name, topic, count, plan)
            result = {"group": name, "topic": topic, "executed": execute, "partitions": plan}
            if at_ms is not None:
                result["timestamp_ms"] = at_ms
            return result

    result = run_client(main)
    if as_json:
        _echo_json(result)
        return
    if at_ms is not None:
        click.echo(f"records appended at or after {format_ms(at_ms)}")
    click.echo(f"{'PARTITION':<10} {'COMMITTED':>10} {'NEW':>10}")
    for p in result["partitions"]:
        committed = "-" if p["committed"] is None else p["committed"]
        click.echo(f"{p['partition']:<10} {committed:>10} {p['new']:>10}")
    if not execute:
        click.echo("dry run: nothing changed (add --execute to commit these offsets)")


async def _plan_partition(
    client: AsyncClient,
    group: str,
    topic: str,
    partition: int,
    to: str | None,
    to_offset: int | None,
    shift_by: int | None,
    at_ms: int | None,
) -> dict[str, Any]:
    offsets = await client.list_offsets(topic, partition)
    committed = await client.committed(group, topic, partition)
    if at_ms is not None:
        # Kafka's --to-datetime: a partition with nothing that recent goes to its end.
        found = await client.offset_for_time(topic, partition, at_ms)
        new = offsets.end_offset if found is None else found.offset
    elif to == "earliest":
        new = offsets.start_offset
    elif to == "latest":
        new = offsets.end_offset
    elif to_offset is not None:
        new = to_offset
    else:
        assert shift_by is not None
        # Kafka shifts from the committed offset; with none, from the start.
        new = (offsets.start_offset if committed is None else committed) + shift_by
    new = min(max(new, offsets.start_offset), offsets.end_offset)
    return {"partition": partition, "committed": committed, "new": new}


async def _commit_plan(
    client: AsyncClient, group: str, topic: str, count: int, plan: list[dict[str, Any]]
) -> None:
    """Join as the group's only member (a new generation claims every partition
    the group committed), commit the plan with that generation, and leave. A
    partition the group never committed and the plan does not name keeps no
    committed offset (later members start it by their auto_offset_reset)."""
    consumer = Consumer(client, group, topic, auto_commit=False, claim_uncommitted=False)
    try:
        await consumer.start()
        if sorted(consumer.partitions) != list(range(count)):
            raise click.ClickException(
                f"group {group!r} gained a member during the reset: nothing committed"
            )
        await consumer.commit({p["partition"]: p["new"] for p in plan}, reset=True)
    finally:
        await consumer.close()
