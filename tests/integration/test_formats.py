"""Every input format imports through the real state machine and exports back to the same records."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.conftest import import_bytes

from sluiceway.client import Client

Conn = psycopg.Connection[dict[str, Any]]

# None: one range; 1: every byte its own range (every boundary lands everywhere once).
CHUNK_SIZES = (None, 1, 5, 64)

RECORDS: list[dict[str, Any]] = [
    {"id": "1", "name": "Smith, Jane", "note": 'said "hi"\nthen left'},
    {"id": "2", "name": "Zoë", "note": "日本, 語 😀"},
    {"id": "3", "name": "", "note": None},
    {"id": "4", "name": 'back\\slash \\" and ]}[{,', "note": "tab\there"},
]


def export_records(client: Client, dataset: str, fmt: str = "jsonl") -> list[dict[str, Any]]:
    """main's rows, exported and downloaded as JSON Lines."""
    export = client.call("POST", f"/datasets/{dataset}/exports", {"format": fmt})
    out = io.BytesIO()
    client.download(export["url"], out)
    text = out.getvalue().decode()
    if fmt == "json":
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line]


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _json_array(records: list[dict[str, Any]]) -> bytes:
    return json.dumps(records, ensure_ascii=False, indent=1).encode()


def _completed(job: dict[str, Any]) -> dict[str, Any]:
    assert job["status"] == "completed", job["error_message"]
    return job


@pytest.mark.parametrize("chunk_bytes", CHUNK_SIZES)
@pytest.mark.parametrize(
    ("filename", "encode"), [("data.jsonl", _jsonl), ("data.json", _json_array)]
)
def test_json_formats_round_trip_at_every_chunk_size(
    client: Client,
    tmp_path: Path,
    dataset_name: str,
    filename: str,
    encode: Any,
    chunk_bytes: int | None,
) -> None:
    # Given records full of quotes, commas, newlines, brackets and non-ASCII text
    data = encode(RECORDS)

    # When the file is imported cut into ranges of this size
    job = _completed(
        import_bytes(
            client, tmp_path, data, dataset_name, chunk_bytes=chunk_bytes, filename=filename
        )
    )

    # Then the export gives back the same records, in order
    assert job["output_summary"]["rows"] == len(RECORDS)
    assert export_records(client, dataset_name) == RECORDS
