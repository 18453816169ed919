"""plan.read_pieces: a range of an object as it arrives, never held whole (the scan and the load)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sluiceway import csvsplit, jsonsplit, plan, readers, storage
from sluiceway.errors import MalformedFile, StorageUnavailable

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def stored(stack: Any) -> tuple[str, str, bytes]:
    bucket, key = stack.settings.storage.bucket, "tests/read-pieces/object.bin"
    body = os.urandom(3 * MIB + 5)
    stack.moto_client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    return bucket, key, body


@pytest.mark.parametrize(("start", "end"), [(0, 3 * MIB + 5), (7, 2 * MIB + 9), (5, 6), (9, 9)])
def test_the_pieces_are_the_range_and_none_is_larger_than_asked(
    stack: Any, stored: tuple[str, str, bytes], start: int, end: int
) -> None:
    bucket, key, body = stored
    pieces = list(plan.read_pieces(bucket, key, start, end, stack.settings, piece_bytes=MIB))
    assert b"".join(pieces) == body[start:end]
    assert all(0 < len(p) <= MIB for p in pieces)
    assert len(pieces) >= -(-(end - start) // MIB)  # a 3 MiB range: in 3 pieces or more


def _jsonl_range(bucket: str, key: str, start: int, end: int, settings: Any) -> list[bytes]:
    """What readers.copy_jsonl reads: its COPY, recorded (a row per record)."""
    rows: list[bytes] = []

    class Copy:
        def write_row(self, row: Any) -> None:
            rows.append(repr(row).encode())

    readers.copy_jsonl(
        Copy(),  # type: ignore[arg-type]
        readers.Source(bucket, key, start, end, 1, ["a"], "object.jsonl", settings),
    )
    return rows


def test_a_json_lines_range_is_one_get_of_exactly_its_bytes(stack: Any) -> None:
    # smart_open's seekable reader, which the JSON readers used, sent bytes=0- and bytes=7-
    bucket, key = stack.settings.storage.bucket, "tests/read-pieces/object.jsonl"
    body = b"".join(b'{"a": %d}\n' % i for i in range(200_000))
    stack.moto_client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    start = body.index(b"\n", 7) + 1
    rows: list[bytes] = []
    asked = _gets(
        stack, lambda: rows.extend(_jsonl_range(bucket, key, start, len(body), stack.settings))
    )
    assert asked == [f"bytes={start}-{len(body) - 1}"]
    assert len(rows) == 199_999  # every record after the first line, none lost at a piece's edge
    assert b"'199999'" in rows[-1]


def _gets(stack: Any, read: Any) -> list[str | None]:
    """The Range of every GetObject the stack's S3 client is asked for while ``read`` runs."""
    asked: list[str | None] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        asked.append(params.get("Range"))

    events = storage.s3_client(stack.settings).meta.events
    events.register("provide-client-params.s3.GetObject", record, unique_id="read-pieces")
    try:
        read()
    finally:
        events.unregister("provide-client-params.s3.GetObject", unique_id="read-pieces")
    return asked


def test_a_range_is_one_get_of_exactly_its_bytes(
    stack: Any, stored: tuple[str, str, bytes]
) -> None:
    # The scan and the CSV load: an open-ended GET (bytes=start-, what a seekable reader
    # sends) would have the store send on to the object's end
    bucket, key, body = stored
    got: list[bytes] = []
    asked = _gets(
        stack, lambda: got.extend(plan.read_pieces(bucket, key, 7, 2 * MIB + 9, stack.settings))
    )
    assert b"".join(got) == body[7 : 2 * MIB + 9]
    assert asked == [f"bytes=7-{2 * MIB + 8}"]


def test_a_range_past_the_objects_end_is_a_malformed_file(
    stack: Any, stored: tuple[str, str, bytes]
) -> None:
    bucket, key, body = stored
    with pytest.raises(MalformedFile, match=f"ended at byte {len(body):,}, before"):
        list(plan.read_pieces(bucket, key, len(body) - 10, len(body) + 100, stack.settings))


def test_a_missing_object_is_storage_unavailable(stack: Any) -> None:
    bucket = stack.settings.storage.bucket
    with pytest.raises(StorageUnavailable, match="tests/read-pieces/none"):
        list(plan.read_pieces(bucket, "tests/read-pieces/none", 0, 10, stack.settings))


def test_a_csv_range_scanned_from_its_pieces_is_scanned_as_whole(stack: Any) -> None:
    # A CSV with quoted newlines whose range starts inside a quoted field, read in 1 MiB
    # pieces from the local S3 as the scan Map reads it
    row = b'1,"two\nlines, and ""quotes""",x\n'
    body = b"id,note,c\n" + row * (3 * MIB // len(row))
    bucket, key = stack.settings.storage.bucket, "tests/read-pieces/object.csv"
    stack.moto_client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    raw_start = len(b"id,note,c\n") + len(row) * 1000 + 5  # inside the quoted field
    pieces = plan.read_pieces(bucket, key, raw_start - 1, len(body), stack.settings)
    scan = csvsplit.scan_pieces(pieces, raw_start)
    assert scan == csvsplit.scan_range(body[raw_start - 1 :], raw_start)
    assert body[scan.first_newline_odd - 2 : scan.first_newline_odd + 1] == b",x\n"
    lines = plan.read_pieces(bucket, key, raw_start - 1, len(body), stack.settings)
    assert jsonsplit.scan_lines_pieces(lines, raw_start) == jsonsplit.scan_lines(
        body[raw_start - 1 :], raw_start
    )


def _replaced_by_a_shorter_object(stack: Any, key: str, body: bytes) -> tuple[str, str]:
    """An object planned at one size and overwritten by a shorter one before it is read."""
    bucket = stack.settings.storage.bucket
    stack.moto_client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    return bucket, key


def test_a_single_get_of_an_object_that_ended_early_is_a_malformed_file(stack: Any) -> None:
    bucket, key = _replaced_by_a_shorter_object(stack, "tests/read-pieces/short.bin", b"x" * 10_000)
    assert plan._read(bucket, key, 9_000, 10_000, stack.settings) == b"x" * 1_000
    with pytest.raises(MalformedFile, match="ended at byte 10,000, before 20,000"):
        plan._read(bucket, key, 9_000, 20_000, stack.settings)


@pytest.mark.parametrize("read", ["_read", "read_pieces"])
def test_a_range_that_starts_past_the_objects_end_is_a_malformed_file(
    stack: Any, read: str
) -> None:
    # S3 answers 416 InvalidRange: the object is shorter than the plan, not the store down
    bucket, key = _replaced_by_a_shorter_object(stack, "tests/read-pieces/short.bin", b"x" * 10_000)
    with pytest.raises(MalformedFile, match="shorter than planned: it ends before byte 50,000"):
        list(getattr(plan, read)(bucket, key, 50_000, 60_000, stack.settings))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pos", [12_000, 30_000])
def test_looking_back_past_the_end_of_a_shorter_object_ends(stack: Any, pos: int) -> None:
    # lookback_start walks back over backslashes 4 KiB at a time. A read that came back short
    # was taken as the bytes asked for (12,000: it answered 0, from bytes that are not where it
    # thought), and one past the end was StorageUnavailable, a retry of the same failure
    bucket, key = _replaced_by_a_shorter_object(
        stack, "tests/read-pieces/backslashes.json", b"\\" * 10_000
    )
    with pytest.raises(MalformedFile, match=r"read-pieces/backslashes\.json"):
        plan.lookback_start(bucket, key, pos, stack.settings)
    assert plan.lookback_start(bucket, key, 10_000, stack.settings) == 0


def test_a_seekable_reader_never_asks_for_the_rest_of_the_object(stack: Any) -> None:
    # The workbook readers and the staging of a compressed upload read through smart_open,
    # which by default GETs bytes=N- at open and at every seek: the store then sends (and the
    # local S3 first reads) everything from N to the end
    bucket, key = stack.settings.storage.bucket, "tests/read-pieces/seekable.bin"
    size = 2 * storage.READ_RANGE_BYTES + 5
    body = os.urandom(size)
    stack.moto_client("s3").put_object(Bucket=bucket, Key=key, Body=body)
    got: list[bytes] = []

    def read() -> None:
        with storage.open_object(bucket, key, stack.settings) as f:
            got.append(f.read())  # all of it, in order
            f.seek(size - 100)  # a zip's directory at the end, then a member near the start
            got.append(f.read(100))
            f.seek(7)
            got.append(f.read(10))

    asked = _gets(stack, read)
    assert got == [body, body[-100:], body[7:17]]
    assert asked
    for asked_range in asked:
        assert asked_range is not None
        first, _, last = asked_range.removeprefix("bytes=").partition("-")
        assert last, f"{asked_range}: open-ended, the rest of the object"
        assert int(last) - int(first) + 1 <= storage.READ_RANGE_BYTES, asked_range
