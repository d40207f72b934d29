"""Record batches on the client side: what a fetch turns stored bytes into."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from raftlog.client.protocol import Record, decode_batch, encode_records

rows = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=8),
        st.binary(max_size=16),
        st.none() | st.dictionaries(st.text(max_size=4), st.binary(max_size=4), max_size=2),
        st.none() | st.integers(min_value=0, max_value=2**40),
    ),
    min_size=1,
    max_size=20,
)


@given(rows, st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=30))
def test_decode_gives_back_every_record_from_min_offset(rows, base, skip) -> None:
    blob, count, _crc = encode_records(rows)
    assert count == len(rows)
    batch_ts = 1_700_000_000_000
    got = decode_batch(base, batch_ts, blob, base + skip)
    want = [
        Record(base + i, batch_ts if ts is None else ts, key, value, headers)
        for i, (key, value, headers, ts) in enumerate(rows)
        if i >= skip
    ]
    assert got == want
    assert all(type(r) is Record for r in got)


def test_a_record_is_immutable() -> None:
    blob, _, _ = encode_records([(b"k", b"v", None, 5)])
    (record,) = decode_batch(7, 1, blob)
    assert (record.offset, record.timestamp_ms, record.key, record.value) == (7, 5, b"k", b"v")
    with pytest.raises(AttributeError):
        record.value = b"changed"  # type: ignore[misc]
