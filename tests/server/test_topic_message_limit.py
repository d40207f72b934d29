"""A topic's ``max_message_bytes`` on three real nodes over sockets: the key
waits for the log format that every node knows it in (log/features.py
TOPIC_CONFIG_FORMATS), then the partition leader refuses a larger batch, the
batching producer keeps under it, and the limit can be changed or removed.
The nodes' own [limits] reach the client in their hello."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from raftlog.client.aio import AsyncClient
from raftlog.client.errors import (
    InvalidRequestError,
    RecordTooLargeError,
    UnsupportedVersionError,
)
from raftlog.client.producer import Producer
from raftlog.log.features import LOG_FORMAT, TOPIC_MESSAGE_LIMIT
from raftlog.server.config import Limits

from .cluster_harness import make_config
from .test_log_format import wait_cluster_format
from .test_tls_cluster import DEADLINE_S, FAST, running

LIMIT = 2000


async def test_the_limit_waits_for_every_node_then_caps_each_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="raftlog.client")
    limits = Limits(max_batch_bytes=64 * 1024, max_record_bytes=4096)
    cfg = make_config(tmp_path, 3, limits=limits, **FAST)
    older = replace(cfg, max_log_format=TOPIC_MESSAGE_LIMIT - 1)  # n3 not upgraded yet
    async with running(cfg, {"n3": older}) as nodes:
        with trio.fail_after(DEADLINE_S):
            await wait_cluster_format(cfg, TOPIC_MESSAGE_LIMIT - 1)
            async with AsyncClient([n.address for n in cfg.nodes]) as client:
                capped = {"max_message_bytes": LIMIT}
                with pytest.raises(UnsupportedVersionError, match="needs log format"):
                    await client.create_topic("capped", 1, 3, capped)
                assert "capped" not in await client.list_topics()

                await nodes.stop("n3")
                await nodes.start("n3")
                await wait_cluster_format(cfg, LOG_FORMAT)
                await client.create_topic("capped", 1, 3, capped)

                # The partition leader measures the batch, whatever the client thinks.
                with pytest.raises(
                    RecordTooLargeError, match=f"max_message_bytes={LIMIT}"
                ) as refused:
                    await client.produce("capped", b"x" * (LIMIT + 1), partition=0)
                assert refused.value.details["limit"] == LIMIT  # a producer splits by it
                async with Producer(client, linger=0.05) as producer:
                    deliveries = [
                        await producer.send("capped", b"%03d" % i + b"." * 97, partition=0)
                        for i in range(100)
                    ]
                    await producer.flush()
                assert [d.result().offset for d in deliveries] == list(range(100))
                assert producer.stats["errors"] == 0
                fetched = await client.fetch("capped", 0, 0, max_records=200)
                assert [r.value[:3] for r in fetched.records] == [b"%03d" % i for i in range(100)]

                # Above the nodes' own batch limit it would never be reached: refused.
                with pytest.raises(InvalidRequestError, match="max_batch_bytes"):
                    await client.alter_topic("capped", config={"max_message_bytes": 1 << 30})
                await client.alter_topic("capped", config={"max_message_bytes": None})
                big = await client.produce("capped", b"y" * (LIMIT + 1), partition=0)
                assert big.offset == 100

                # Lowered again, by another client, under a producer whose metadata
                # has no limit: the batches it seals are refused, split and sent again
                # in their place (KIP-126), in order, and none fails.
                while client.max_message_bytes("capped") is not None:
                    await client.metadata()  # until the node answering has applied the removal
                async with Producer(client, linger=0.05) as producer:
                    await (await producer.send("capped", b"w" * 100, partition=0))
                    async with AsyncClient([n.address for n in cfg.nodes]) as operator:
                        await operator.alter_topic("capped", config={"max_message_bytes": LIMIT})
                        # The partition leader applies the change a moment after it
                        # commits: until then it still takes larger batches.
                        while True:
                            try:
                                await operator.produce("capped", b"p" * (LIMIT + 1), partition=0)
                            except RecordTooLargeError:
                                break
                    base = (await client.list_offsets("capped", 0)).end_offset
                    caplog.clear()
                    values = [b"%03d" % i + b"," * 97 for i in range(100)]
                    deliveries = [await producer.send("capped", v, partition=0) for v in values]
                    await producer.flush()
                assert [d.result().offset for d in deliveries] == list(range(base, base + 100))
                assert producer.stats["errors"] == 0
                assert "event=batch_resplit" in caplog.text
                fetched = await client.fetch("capped", 0, base, max_records=200)
                assert [r.value for r in fetched.records] == values

                # The nodes announced their [limits] in each hello: the client checks by them.
                assert (client.max_record_bytes, client.max_batch_bytes) == (4096, 64 * 1024)
                with pytest.raises(RecordTooLargeError, match="max_record_bytes=4096"):
                    await client.produce("capped", b"z" * 4097, partition=0)
