"""What kind of file an upload is: format, compression, encoding and CSV dialect.

Pure functions over a file's name and first bytes, shared by the upload's option checks and
the planner. An option the user gave always wins over what is detected.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass

from .errors import MalformedFile, UnsupportedFormat

FORMATS = ("csv", "tsv", "jsonl", "json", "xlsx")
DELIMITERS = (",", "\t", ";", "|")
COMPRESSIONS = ("gzip", "zstd")
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".txt": "csv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
_COMPRESSED_EXTENSIONS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}

# Python codec name -> PostgreSQL's name for COPY's ENCODING. UTF-16 has none: PostgreSQL
# cannot read it, so such a file is transcoded to UTF-8 while it is staged.
_POSTGRES_ENCODINGS = {"utf-8": "UTF8", "iso8859-1": "LATIN1", "cp1252": "WIN1252"}
ENCODINGS = ("utf-8", "latin-1", "cp1252", "utf-16")


def normalize_encoding(name: str) -> str:
    """The canonical Python name of a supported encoding; anything else is refused."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError as exc:
        raise ValueError(f"unknown encoding {name!r}; use one of {', '.join(ENCODINGS)}") from exc
    if canonical == "utf-8-sig":
        canonical = "utf-8"
    if canonical not in (*_POSTGRES_ENCODINGS, "utf-16"):
        raise ValueError(f"encoding {name!r} is not supported; use one of {', '.join(ENCODINGS)}")
    return canonical


def postgres_encoding(encoding: str) -> str | None:
    """PostgreSQL's name for a (canonical) encoding, or None if it must be transcoded first."""
    return _POSTGRES_ENCODINGS.get(encoding)


def strip_compression(filename: str) -> tuple[str, str | None]:
    """(the name without a compression extension, the compression that extension names)."""
    lower = filename.lower()
    for ext, kind in _COMPRESSED_EXTENSIONS.items():
        if lower.endswith(ext):
            return filename[: -len(ext)], kind
    return filename, None


def detect_compression(filename: str, first: bytes) -> str | None:
    """gzip or zstd by magic number (what the bytes say wins over the name), else None."""
    if first.startswith(GZIP_MAGIC):
        return "gzip"
    if first.startswith(ZSTD_MAGIC):
        return "zstd"
    _, by_name = strip_compression(filename)
    if by_name:
        raise MalformedFile(
            f"{filename}: the name says {by_name} but the file does not start with a {by_name} "
            "header; it is truncated, not compressed, or misnamed.",
            byte_offset=0,
        )
    return None


def detect_format(filename: str, first: bytes) -> str:
    """The format by the file's extension, else by its first bytes (UTF-8 or decoded)."""
    name, _ = strip_compression(filename)
    lower = name.lower()
    if first.startswith(ZIP_MAGIC):
        return "xlsx"  # a workbook whatever its name (a zip of anything else fails to open)
    if first.startswith(OLE_MAGIC) or lower.endswith(".xls"):
        raise UnsupportedFormat(
            f"{filename} is an Excel 97-2003 workbook (.xls) or another OLE file; save it as "
            ".xlsx or CSV."
        )
    for ext, fmt in _EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    text = first.lstrip(UTF8_BOM).lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    return "csv"


def sniff_delimiter(sample: str) -> str:
    """The delimiter among comma, tab, semicolon and pipe that splits the sample's first lines
    into the same number (> 1) of fields most often; comma if none does."""
    lines = sample.splitlines()[:50]
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample cut the last line
    best, best_score = ",", (0, 0)
    for delimiter in DELIMITERS:
        try:
            rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
        except csv.Error:
            continue
        widths = [len(r) for r in rows if r]
        if not widths or widths[0] < 2:
            continue
        score = (sum(w == widths[0] for w in widths), widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


@dataclass(frozen=True)
class Source:
    """How to read an uploaded object, decided once by the planner."""

    format: str
    compression: str | None
    encoding: str  # canonical Python name
    delimiter: str
    header: bool


def check_delimiter(value: str) -> str:
    names = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = names.get(value.lower(), value)
    if len(value) != 1 or value in '"\r\n' or value == "\x00":
        raise ValueError(
            "delimiter is one character other than a quote or a line end, e.g. ',', ';', '|' "
            "or 'tab'"
        )
    return value
