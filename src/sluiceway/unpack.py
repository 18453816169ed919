"""Stage 2a', unpack: a compressed or UTF-16 upload becomes a plain UTF-8 object the Map can split.

A gzip or zstd stream (and UTF-16 text) cannot be cut at byte offsets, so one streaming pass
decompresses and transcodes it into a staged object under the work prefix (S3 multipart parts
of ``assembly_part_bytes``; memory stays at one part and one read block). Everything after
it, the scan and the parallel loads, reads the staged object like any upload. The output is
capped (``imports.max_unpacked_bytes``): a small file that inflates without end is an error,
not a full disk or a Lambda that runs out of time.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator
from typing import IO, Any

import zstandard
from smart_open import open as smart_open

from . import storage
from .errors import MalformedFile, PayloadTooLarge
from .settings import MiB, Settings

READ_BYTES = 1 * MiB


def _decompressed(raw: IO[bytes], compression: str | None) -> Iterator[bytes]:
    if compression == "gzip":
        # GzipFile reads multi-member files (e.g. pigz, concatenated .gz) as one stream.
        with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
            while block := inflated.read(READ_BYTES):
                yield block
    elif compression == "zstd":
        yield from _zstd(raw)
    else:
        while block := raw.read(READ_BYTES):
            yield block


# zstd's decompressobj returns all the output of what it is fed: fed in small pieces, one
# call's output stays bounded (an all-zero 128 KiB block is a few bytes of zstd) however
# hostile the input.
_ZSTD_FEED = 1024


def _zstd(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompress every frame of a zstd stream; a truncated last frame is an EOFError
    (zstandard's stream reader ends such a stream silently)."""
    dctx = zstandard.ZstdDecompressor()
    frame = dctx.decompressobj()
    fed = False
    while block := raw.read(READ_BYTES):
        view = memoryview(block)
        for i in range(0, len(view), _ZSTD_FEED):
            piece = bytes(view[i : i + _ZSTD_FEED])
            while piece:
                fed = True
                out = frame.decompress(piece)
                if out:
                    yield out
                if frame.eof:  # the next frame starts in what is left
                    piece, frame, fed = frame.unused_data, dctx.decompressobj(), False
                else:
                    piece = b""
    if fed and not frame.eof:
        raise EOFError("the last zstd frame is truncated")


def stage(
    bucket: str,
    key: str,
    dest_key: str,
    *,
    compression: str | None,
    encoding: str,
    filename: str,
    settings: Settings,
) -> int:
    """Write the decompressed, UTF-8 content of s3://bucket/key to s3://bucket/dest_key.

    Returns the staged size in bytes. A UTF-8 BOM or UTF-16 BOM is not copied.
    """
    cap = settings.imports.max_unpacked_bytes
    decoder = None if encoding == "utf-8" else codecs.getincrementaldecoder(encoding)("strict")
    transport: dict[str, Any] = {
        **storage.smart_open_params(settings),
        "min_part_size": settings.sessions.assembly_part_bytes,
    }
    written = 0
    consumed = 0  # decompressed (not yet transcoded) bytes, for error offsets
    first = True
    try:
        with (
            storage.open_object(bucket, key, settings) as raw,  # the upload, as planned
            smart_open(
                f"s3://{bucket}/{dest_key}", "wb", compression="disable", transport_params=transport
            ) as out,
        ):
            for block in _decompressed(raw, compression):
                if decoder is not None:
                    try:
                        data = decoder.decode(block).encode("utf-8")
                    except UnicodeDecodeError as exc:
                        offset = consumed + exc.start
                        raise MalformedFile(
                            f"{filename}: byte {offset:,} of the {'decompressed ' if compression else ''}"
                            f"text is not valid {encoding}; give the file's --encoding.",
                            byte_offset=offset,
                        ) from exc
                else:
                    data = block
                if first:
                    data = data.removeprefix(b"\xef\xbb\xbf")  # a BOM U+FEFF, in UTF-8
                    first = False
                consumed += len(block)
                written += len(data)
                if written > cap:
                    raise PayloadTooLarge(
                        f"{filename} decompresses to more than {cap:,} bytes, the limit "
                        "(imports.max_unpacked_bytes); a file this large must be uploaded "
                        "uncompressed, or the limit raised.",
                        byte_offset=consumed,
                    )
                out.write(data)
            if decoder is not None:
                try:
                    out.write(decoder.decode(b"", final=True).encode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise MalformedFile(
                        f"{filename}: the text ends in the middle of a {encoding} character "
                        "(truncated?).",
                        byte_offset=consumed,
                    ) from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise MalformedFile(
            f"{filename}: the {compression} stream is broken or truncated after "
            f"{consumed:,} decompressed bytes: {exc}",
            byte_offset=consumed,
        ) from exc
    except zstandard.ZstdError as exc:
        raise MalformedFile(
            f"{filename}: the zstd stream is broken after {consumed:,} decompressed bytes: {exc}",
            byte_offset=consumed,
        ) from exc
    return written
