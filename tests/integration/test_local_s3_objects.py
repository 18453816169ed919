"""The embedded S3's ranged GETs and multipart completes (sluiceway.local.s3objects).

A ranged GET must read only its range and answer exactly what moto's own code answers; a
complete must build the object moto's own code builds, with the same ETag and checksum.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import io
import os
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
from moto.s3.models import FakeKey, FakeMultipart, s3_backends
from moto.s3.responses import S3Response

from sluiceway.local import s3objects

BUCKET = "sluiceway-s3objects-test"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(stack: Any) -> Any:
    client = stack.moto_client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def _key(name: str) -> Any:
    for by_partition in s3_backends.values():
        for backend in by_partition.values():
            if BUCKET in backend.buckets:
                return backend.buckets[BUCKET].keys[name]
    raise AssertionError(f"{BUCKET} is not in moto's backends")


class _CountingBuffer:
    """A key's buffer that counts the bytes read from it, and the largest read."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.read_bytes = 0
        self.largest_read = 0

    def read(self, *args: Any) -> bytes:
        data = self.inner.read(*args)
        self.read_bytes += len(data)
        self.largest_read = max(self.largest_read, len(data))
        return bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_moto_still_takes_the_seams_the_patch_relies_on(stack: Any) -> None:
    get_object = inspect.getsource(S3Response.get_object)
    assert "return 200, response_headers, key.value" in get_object
    ranges = inspect.getsource(S3Response._handle_range_header)
    assert "length = len(response_content)" in ranges
    assert "response_content[begin : end + 1]" in ranges
    assert FakeMultipart.complete is s3objects._complete


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-9",
        "bytes=1000-2047",
        f"bytes={3 * MIB}-",
        "bytes=-100",
        f"bytes=-{10 * MIB}",  # a suffix longer than the object: all of it
        f"bytes={6 * MIB - 5}-{9 * MIB}",  # an end past the object's: cut at its end
        "bytes=0-",
    ],
)
def test_a_ranged_get_reads_only_its_range_and_answers_what_s3_answers(
    s3: Any, header: str
) -> None:
    data = os.urandom(6 * MIB)
    s3.put_object(Bucket=BUCKET, Key="ranged", Body=data)
    counting = _CountingBuffer(_key("ranged")._value_buffer)
    _key("ranged")._value_buffer = counting
    answer = s3.get_object(Bucket=BUCKET, Key="ranged", Range=header)
    got = answer["Body"].read()
    spec = header.removeprefix("bytes=")
    first, _, last = spec.partition("-")
    if not first:
        begin, end = max(0, len(data) - int(last)), len(data) - 1
    else:
        begin, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
    assert got == data[begin : end + 1]
    assert answer["ContentRange"] == f"bytes {begin}-{end}/{len(data)}"
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert counting.read_bytes == end + 1 - begin  # not the whole object
    assert counting.largest_read <= s3objects.COPY_BYTES  # nor the range at once: as it is sent


@pytest.mark.parametrize("header", [None, "bytes=0-9,20-29"])  # no Range; one S3 ignores
def test_a_whole_object_is_sent_as_it_is_read_never_held_whole(s3: Any, header: str) -> None:
    # A browser's plain download of a large document, or an export part's: moto read the
    # whole value into one bytes first
    data = os.urandom(3 * s3objects.COPY_BYTES + 5)
    s3.put_object(Bucket=BUCKET, Key="streamed", Body=data)
    counting = _CountingBuffer(_key("streamed")._value_buffer)
    _key("streamed")._value_buffer = counting
    answer = s3.get_object(Bucket=BUCKET, Key="streamed", **({"Range": header} if header else {}))
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["ContentLength"] == len(data)
    assert answer["Body"].read() == data
    assert counting.read_bytes == len(data)
    assert counting.largest_read <= s3objects.COPY_BYTES  # read a block at a time


def test_a_get_that_s3_answers_with_the_whole_object_still_gets_it(s3: Any) -> None:
    data = os.urandom(MIB)
    s3.put_object(Bucket=BUCKET, Key="whole", Body=data)
    for header in ("bytes=0-9,20-29", "bytes=abc-def", None):
        kwargs = {"Range": header} if header else {}
        answer = s3.get_object(Bucket=BUCKET, Key="whole", **kwargs)
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200, header
        assert answer["Body"].read() == data, header


def test_a_range_past_the_end_is_refused_as_before(s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="short", Body=b"0123456789")
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=BUCKET, Key="short", Range="bytes=10-20")
    assert caught.value.response["Error"]["Code"] == "InvalidRange"
    head = s3.head_object(Bucket=BUCKET, Key="short", Range="bytes=2-4")
    assert head["ContentLength"] == 3
    assert s3.get_object(Bucket=BUCKET, Key="short", Range="bytes=2-4")["Body"].read() == b"234"


def _multipart(parts: list[bytes], metadata: dict[str, str]) -> tuple[FakeMultipart, list[Any]]:
    upload = FakeMultipart("k", metadata, account_id="123456789012", region_name="us-east-1")
    entries = []
    for number, value in enumerate(parts, start=1):
        entries.append((number, upload.set_part(number, value).etag))
    return upload, entries


@pytest.mark.parametrize(
    "metadata",
    [
        {},  # moto's default: CRC64NVME over the whole object (CRC32 without awscrt)
        {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "FULL_OBJECT"},
        {"x-amz-checksum-algorithm": "CRC32"},  # composite
        {"x-amz-checksum-algorithm": "SHA256"},
        {"x-amz-checksum-algorithm": "SHA1", "x-amz-checksum-type": "FULL_OBJECT"},
    ],
)
def test_a_complete_builds_the_object_moto_builds(metadata: dict[str, str]) -> None:
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB + 7), os.urandom(1234)]
    ours, entries = _multipart(parts, metadata)
    theirs, their_entries = _multipart(parts, metadata)
    value, etag, checksum = s3objects._complete(ours, iter(entries))
    their_value, their_etag, their_checksum = s3objects.moto_complete(theirs, iter(their_entries))
    assert bytes(value) == their_value == b"".join(parts)
    assert etag == their_etag
    assert checksum == their_checksum


def test_the_running_checksum_is_the_whole_objects_crc32() -> None:
    parts = [os.urandom(5 * MIB), os.urandom(333)]
    upload, entries = _multipart(parts, {})
    _, _, checksum = s3objects._complete(upload, iter(entries))
    whole = binascii.crc32(b"".join(parts)).to_bytes(4, "big")
    assert checksum == ("FULL_OBJECT", base64.b64encode(whole).decode(), 1)


def test_a_complete_never_holds_the_object_whole_and_its_key_adopts_the_file() -> None:
    # moto's complete (and ours until 7 Dec 2026) joined every part into one bytes: a 10 GB
    # upload held 10 GB of the stack's memory for as long as the complete took
    parts = [os.urandom(8 * MIB) for _ in range(4)]
    metadata = {"x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "FULL_OBJECT"}
    upload, entries = _multipart(parts, metadata)
    tracemalloc.start()
    try:
        value, etag, checksum = s3objects._complete(upload, iter(entries))
        key = FakeKey("k", value, account_id="123456789012", region_name="us-east-1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB  # of a 32 MiB object: a block, and the spool before it rolls over
    assert key._value_buffer is value.buffer  # written once, then adopted
    assert key.contentsize == 32 * MIB
    upload.dispose()  # what moto does once the complete returns: the parts go
    assert key.value == b"".join(parts)
    whole = binascii.crc32(b"".join(parts)).to_bytes(4, "big")
    assert checksum == ("FULL_OBJECT", base64.b64encode(whole).decode(), 1)
    assert etag.endswith("-4")


def test_a_complete_refuses_what_moto_refuses() -> None:
    upload, entries = _multipart([os.urandom(5 * MIB), os.urandom(10)], {})
    with pytest.raises(InvalidPart):
        s3objects._complete(upload, iter([(1, entries[0][1]), (2, '"0000"')]))
    with pytest.raises(InvalidPart):
        s3objects._complete(upload, iter([(3, entries[0][1])]))
    small, small_entries = _multipart([b"too small", os.urandom(5 * MIB)], {})
    with pytest.raises(EntityTooSmall):
        s3objects._complete(small, iter(small_entries))
    empty: Iterator[tuple[int, str]] = iter([])
    with pytest.raises(MalformedXML):
        s3objects._complete(upload, empty)


def test_a_multipart_upload_through_the_stack_reads_back_whole_and_in_ranges(s3: Any) -> None:
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(99)]
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
    done = [
        {
            "PartNumber": n,
            "ETag": s3.upload_part(
                Bucket=BUCKET, Key="multi", UploadId=upload, PartNumber=n, Body=body
            )["ETag"],
        }
        for n, body in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="multi", UploadId=upload, MultipartUpload={"Parts": done}
    )
    data = b"".join(parts)
    assert s3.get_object(Bucket=BUCKET, Key="multi")["Body"].read() == data
    middle = s3.get_object(Bucket=BUCKET, Key="multi", Range=f"bytes={5 * MIB - 3}-{5 * MIB + 3}")
    assert middle["Body"].read() == data[5 * MIB - 3 : 5 * MIB + 4]
    assert s3.head_object(Bucket=BUCKET, Key="multi")["ETag"].endswith('-3"')


def test_a_window_slices_like_the_bytes_it_stands_for() -> None:
    data = bytes(range(256)) * 4

    class Key:
        contentsize = len(data)
        lock = threading.Lock()
        _value_buffer = io.BytesIO(data)

    window = s3objects._Window(Key(), lambda key: data)
    assert len(window) == len(data)
    for item in (slice(0, 10), slice(1000, 5000), slice(-7, None), slice(9, 3), slice(None)):
        assert window[item] == data[item], item
    assert window[::3] == data[::3]
    assert window[5] == data[5]
