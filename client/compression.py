"""Batch compression (Kafka's ``compression.type``), done by the client alone.

The batching Producer may compress each batch's packed records before it is
sent; the server stores and replicates the bytes it gets, as it does any
batch (it checks size, count and CRC, never the records: DESIGN.md §9), and a
fetch hands them back for the client to decompress. So compression costs the
nodes nothing and divides what they send to peers, write to the WAL and
compact by the data's compression ratio.

A compressed batch is ``MAGIC, codec id, compressed msgpack rows``. ``MAGIC``
(0xC1) is the one byte msgpack never uses, so an uncompressed batch (a
msgpack array) can never be mistaken for a compressed one, and batches of
either kind can follow each other in a partition.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAGIC = 0xC1  # "never used" in the msgpack spec


class CompressionError(ValueError):
    """A batch that cannot be decompressed, or a codec that is not available."""


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    codec_id: int
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    # (data, max_bytes): the data decompressed, or CompressionError once it
    # would exceed max_bytes, found without producing more than that (a
    # node checking a batch must not be made to allocate a "zip bomb").
    decompress_at_most: Callable[[bytes, int], bytes]


def _too_big(name: str, max_bytes: int) -> CompressionError:
    return CompressionError(f"{name} batch decompresses to more than {max_bytes} bytes")


def _gzip() -> Codec:
    def at_most(data: bytes, max_bytes: int) -> bytes:
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, max_bytes + 1)
        if len(out) > max_bytes:
            raise _too_big("gzip", max_bytes)
        return out + inflater.flush()  # the tail of an incomplete stream, if any

    # zlib level 1: gzip's format family at its fastest level (stdlib, always there).
    return Codec("gzip", 1, lambda b: zlib.compress(b, 1), zlib.decompress, at_most)


def _lz4() -> Codec:
    import lz4.block

    def at_most(data: bytes, max_bytes: int) -> bytes:
        # The block starts with its uncompressed length (store_size), little-endian.
        if len(data) >= 4 and int.from_bytes(data[:4], "little") > max_bytes:
            raise _too_big("lz4", max_bytes)
        return lz4.block.decompress(data)

    # store_size: the block carries its uncompressed length, so decompression
    # needs no size limit from outside.
    return Codec(
        "lz4", 2, lambda b: lz4.block.compress(b, store_size=True), lz4.block.decompress, at_most
    )


def _zstd() -> Codec:
    import zstandard

    # One compressor and decompressor per thread: python-zstandard's objects
    # must not be used by two threads at once, and a node checks and compacts
    # batches in worker threads (server/handlers.py, server/compaction.py).
    # Shared, two concurrent checks read a valid batch as "Data corruption
    # detected", and two compressions fail or mix their output.
    local = threading.local()

    def compressor() -> Any:
        c = getattr(local, "compressor", None)
        if c is None:
            # level 1: ~2 GB/s here, ratio near level 3
            c = local.compressor = zstandard.ZstdCompressor(level=1)
        return c

    def decompressor() -> Any:
        d = getattr(local, "decompressor", None)
        if d is None:
            d = local.decompressor = zstandard.ZstdDecompressor()
        return d

    def compress(data: bytes) -> bytes:
        return compressor().compress(data)

    def decompress(data: bytes) -> bytes:
        return decompressor().decompress(data)

    def at_most(data: bytes, max_bytes: int) -> bytes:
        try:
            size = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise CompressionError(f"corrupt zstd batch: {exc}") from exc
        if size > max_bytes:
            raise _too_big("zstd", max_bytes)
        # An unknown size (-1): max_output_size bounds the output instead, and
        # zstd then cannot tell a frame cut short by it from a corrupt one.
        try:
            return decompressor().decompress(data, max_output_size=max_bytes)
        except zstandard.ZstdError as exc:
            raise CompressionError(
                f"zstd batch is corrupt or decompresses to more than {max_bytes} bytes: {exc}"
            ) from exc

    return Codec("zstd", 3, compress, decompress, at_most)


_FACTORIES: dict[str, Callable[[], Codec]] = {"gzip": _gzip, "lz4": _lz4, "zstd": _zstd}
_IDS = {1: "gzip", 2: "lz4", 3: "zstd"}
CODECS = ("none", *_FACTORIES)
_loaded: dict[str, Codec] = {}


def codec(name: str) -> Codec:
    """The codec called ``name`` (gzip, lz4, zstd); CompressionError if unknown
    or its library is missing."""
    found = _loaded.get(name)
    if found is not None:
        return found
    factory = _FACTORIES.get(name)
    if factory is None:
        raise CompressionError(f"unknown compression {name!r} (one of {', '.join(CODECS)})")
    try:
        found = _loaded[name] = factory()
    except ImportError as exc:
        raise CompressionError(
            f"compression {name!r} needs a library that is not installed: {exc}"
        ) from exc
    return found


def compress(packed: bytes, name: str) -> bytes:
    """``packed`` (a msgpack batch) compressed with the codec ``name``."""
    c = codec(name)
    return bytes((MAGIC, c.codec_id)) + c.compress(packed)


def is_compressed(blob: bytes) -> bool:
    return len(blob) > 0 and blob[0] == MAGIC


def decompress(blob: bytes, max_bytes: int | None = None) -> bytes:
    """The msgpack batch inside a compressed ``blob`` (``is_compressed(blob)``).

    ``max_bytes``: CompressionError instead of a result larger than this (for
    input from others: a node checking a produced batch)."""
    if len(blob) < 2:
        raise CompressionError("compressed batch too short")
    name = _IDS.get(blob[1])
    if name is None:
        raise CompressionError(f"batch compressed with an unknown codec id {blob[1]}")
    try:
        c = codec(name)
        if max_bytes is None:
            return c.decompress(blob[2:])
        return c.decompress_at_most(blob[2:], max_bytes)
    except CompressionError:
        raise
    except Exception as exc:  # each library has its own error types
        raise CompressionError(f"corrupt {name} batch: {exc}") from exc
