"""Four costs of moto's S3 that grow with the object, removed for the embedded stack.

moto (pinned; tests/integration/test_local_s3_objects.py guards these seams) keeps each object
in a ``SpooledTemporaryFile``. Four of its paths copy the whole object where S3 would not:

- **A ranged GET reads the whole object**, then slices it (``S3Response.get_object`` returns
  ``key.value``; ``_handle_range_header`` slices that). An import reads its object twice in
  ranges (the quote scan and the load), so a 10M-row file of 830 MB in 64 MiB ranges copied
  21 GB, and a 10 GB file in 160 ranges would copy 3 TB. Here a ranged GET hands moto a
  :class:`_Window` of the key: its length is the object's, and the slice that moto takes of it
  reads only the requested bytes, through the HTTP server as a :class:`_Stream` of them (read
  1 MiB at a time as they are sent, not one ``bytes`` of the range). Whatever else moto does
  with the request (headers, conditions, errors, a multi-range or unparseable ``Range`` that
  S3 answers with the whole object) is its own code.
- **A GET of the whole object** (no Range: a browser's download of a document, the CLI's of
  an export part) read it into one ``bytes`` before sending it. Through the HTTP server the
  body is now a :class:`_Stream` of the key's buffer, read 1 MiB at a time as it is sent
  (moto's Content-Length stays the key's size); moto in-process still answers with bytes.
- **Completing a multipart upload** built the object twice (once for the value, once more
  for the whole-object checksum), then copied it a third time into ``bytes``. Here the
  object is never held whole: the complete copies the parts' buffers, 1 MiB at a time, into
  a spooled file that the new key adopts as its own (:class:`_Built`), and a CRC32-based
  whole-object checksum is computed from the same blocks as they go by (``binascii.crc32``
  continues a running value, so it is the same number); other checksums take moto's own
  builder, a part at a time.
- **A value larger than the in-memory limit** (5 MiB, so every 8 MiB part and every imported
  file) was written into the ``SpooledTemporaryFile``'s memory first and then copied to disk
  when it rolled over. Here it rolls over first, so the bytes are written once.

Measured with 830 MB (``bench/local_s3.py``): see bench/README.md.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import tempfile
from collections.abc import Iterator
from typing import Any

# What the one read of a key's value during a GET hands moto: a window ("range", and
# "range-stream" when its slice may stream) or a stream ("whole"); None outside a GET, where
# moto reads the value as it always does.
_reading: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sluiceway_get_reads", default=None
)
# a GET's body is read, and a completed object's parts copied and checksummed, this much at a time
COPY_BYTES = 1024 * 1024
_installed = False
moto_complete: Any = None  # moto's own FakeMultipart.complete, kept for the tests to compare


class _Window:
    """A key's bytes as moto's range handling sees them: ``len`` and slices, read on demand."""

    def __init__(self, key: Any, whole: Any, *, stream: bool = False) -> None:
        self.key = key
        self._whole = whole  # moto's own getter of the full value
        self.stream = stream  # a slice is a _Stream of the range, read as it is sent

    def __len__(self) -> int:
        return int(self.key.contentsize)

    def __getitem__(self, item: slice | int) -> Any:
        if not isinstance(item, slice) or item.step not in (None, 1):
            return self.whole()[item]  # moto takes only plain slices; anything else still works
        start, stop, _ = item.indices(len(self))
        if self.stream:
            return _Stream(self.key, start, stop)
        with self.key.lock:
            buffer = self.key._value_buffer
            buffer.seek(start)
            return bytes(buffer.read(max(0, stop - start)))

    def whole(self) -> bytes:
        return bytes(self._whole(self.key))


class _Stream:
    """Bytes [start, stop) of a key (all of it by default) as an HTTP response body: read
    COPY_BYTES at a time as they are sent, never one ``bytes``. ``len`` is what moto puts in
    Content-Length for a range; for the whole object it uses the key's size."""

    def __init__(self, key: Any, start: int = 0, stop: int | None = None) -> None:
        self.key = key  # held: the bytes stay readable until sent, even if the key is replaced
        self.start = start
        self.stop = int(key.contentsize) if stop is None else max(stop, start)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[bytes]:
        position = self.start
        while position < self.stop:
            with self.key.lock:  # other GETs of the key read its buffer too
                buffer = self.key._value_buffer
                buffer.seek(position)
                block = buffer.read(min(COPY_BYTES, self.stop - position))
            if not block:
                return
            position += len(block)
            yield block


class _Built:
    """A completed object's value, already in a spooled file of its own (on disk once it
    outgrows moto's in-memory limit): what the key's value setter adopts as its buffer, so
    the object is never one ``bytes`` and is written once."""

    def __init__(self, buffer: Any, size: int) -> None:
        self.buffer = buffer
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:  # for comparisons; the stack never calls it
        self.buffer.seek(0)
        return bytes(self.buffer.read())


def install() -> None:
    """Patch moto's S3 in this process (idempotent)."""
    global _installed, moto_complete  # noqa: PLW0603 - moto's classes are process-wide
    if _installed:
        return
    from moto.s3.models import FakeKey, FakeMultipart
    from moto.s3.responses import S3Response

    moto_value: Any = FakeKey.__dict__["value"]  # the property, not what it reads
    whole_value, set_value = moto_value.fget, moto_value.fset

    def value(self: Any) -> Any:
        reading = _reading.get()
        if reading is not None:
            _reading.set(None)  # the one read a GET makes, at its end
            if reading == "whole":
                return _Stream(self)
            return _Window(self, whole_value, stream=reading == "range-stream")
        return whole_value(self)

    def store(self: Any, new_value: Any) -> None:
        if isinstance(new_value, _Built):  # a complete's object: its file becomes the key's
            self._value_buffer.close()
            self._value_buffer = new_value.buffer
            self.contentsize = len(new_value)
            return
        if len(new_value) > self._max_buffer_size:  # to disk now, not via an in-memory copy
            self._value_buffer.rollover()
        set_value(self, new_value)

    FakeKey.value = property(value, store)  # type: ignore[method-assign,assignment]

    original_key_response = S3Response.key_response

    def key_response(self: Any, request: Any, full_url: str, headers: Any) -> Any:
        # a body can stream only through the HTTP server (a werkzeug request has an environ);
        # moto in-process hands its body to botocore, which wants bytes
        http = hasattr(request, "environ")
        ranged = bool(request.headers.get("range"))
        if request.method != "GET" or not (ranged or http):
            return original_key_response(self, request, full_url, headers)
        token = _reading.set(("range-stream" if http else "range") if ranged else "whole")
        try:
            answer: Any = original_key_response(self, request, full_url, headers)
        finally:
            _reading.reset(token)
        status, response_headers, body = answer
        if isinstance(body, _Window):  # answered without slicing it: the whole object
            body = _Stream(body.key) if http else body.whole()
        return status, response_headers, body

    S3Response.key_response = key_response  # type: ignore[method-assign]
    moto_complete = FakeMultipart.complete
    FakeMultipart.complete = _complete  # type: ignore[method-assign]
    _installed = True


def _crc32_based(algorithm: str) -> bool:
    """Whether moto's checksum of ``algorithm`` is CRC32 (its fallback without awscrt/crc32c)."""
    from moto.s3.utils import compute_checksum

    probe = b"sluiceway"
    return compute_checksum(probe, algorithm, encode_base64=False) == binascii.crc32(
        probe
    ).to_bytes(4, "big")


def _complete(self: Any, body: Iterator[tuple[int, str]]) -> tuple[Any, str, Any]:
    """``FakeMultipart.complete`` (moto 5.2.5) building the object once."""
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.models import MultipartChecksumBuilder
    from moto.settings import S3_UPLOAD_PART_MIN_SIZE, get_s3_default_key_buffer_size
    from moto.utilities.utils import md5_hash

    checksum_builder = MultipartChecksumBuilder(
        self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
    )
    running = checksum_builder.checksum_type == "FULL_OBJECT" and _crc32_based(
        checksum_builder.checksum_algorithm
    )
    # the key adopts this file (``store``, above); it is closed here only if the complete fails
    built = tempfile.SpooledTemporaryFile(get_s3_default_key_buffer_size())  # noqa: SIM115
    size = 0
    md5s = bytearray()
    crc = 0
    last = None
    count = 0
    try:
        for pn, given_etag in body:
            part = self.parts.get(pn)
            if part is None or part.etag.replace('"', "") != given_etag.replace('"', ""):
                raise InvalidPart()
            if last is not None and last.contentsize < S3_UPLOAD_PART_MIN_SIZE:
                raise EntityTooSmall()
            md5s.extend(bytes.fromhex(part.etag.replace('"', "")))
            for block in _Stream(part):  # the parts go with the upload: copied now
                built.write(block)
                if running:
                    crc = binascii.crc32(block, crc)
            size += int(part.contentsize)
            if not running:
                checksum_builder.addPart(part.value)
            last = part
            count += 1
        if count == 0:
            raise MalformedXML
    except BaseException:
        built.close()
        raise
    full_etag = md5_hash()
    full_etag.update(bytes(md5s))
    checksum: tuple[str, str, int] | None
    if running:
        checksum = ("FULL_OBJECT", base64.b64encode(crc.to_bytes(4, "big")).decode(), 1)
    else:
        checksum = checksum_builder.build()
    # FakeKey only takes its length and its bytes: it adopts the file (``store``, above)
    return _Built(built, size), f"{full_etag.hexdigest()}-{count}", checksum
