"""The data bucket: what browsers, the pipeline and the bill rely on."""

from __future__ import annotations

from typing import Any

import pytest

from infra_support import Synthesized

pytestmark = pytest.mark.infra


def _data_bucket(synthesized: Synthesized) -> dict[str, Any]:
    buckets = synthesized.resources("AWS::S3::Bucket")
    [body] = [b for lid, b in buckets.items() if lid.startswith("StorageDataBucket")]
    return body["Properties"]


def test_browsers_can_upload_parts_and_read_their_etags(synthesized: Synthesized) -> None:
    [rule] = _data_bucket(synthesized)["CorsConfiguration"]["CorsRules"]

    assert "ETag" in rule["ExposedHeaders"]
    assert {"PUT", "POST"} <= set(rule["AllowedMethods"])


def test_abandoned_multipart_uploads_are_aborted_and_work_files_expire(
    synthesized: Synthesized,
) -> None:
    rules = {r["Id"]: r for r in _data_bucket(synthesized)["LifecycleConfiguration"]["Rules"]}

    abort = rules["AbortIncompleteUploads"]
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert "Prefix" not in abort, "abandoned uploads must be aborted anywhere in the bucket"
    assert rules["ExpireWorkFiles"]["Prefix"] == "work/"
    assert rules["ExpireWorkFiles"]["ExpirationInDays"] == 7
    assert rules["ExpireSessionChunks"]["Prefix"] == "sessions/"
    assert rules["ExpireSessionChunks"]["ExpirationInDays"] == 7
    # uploads, documents and exports are kept: nothing else expires
    assert {r.get("Prefix") for r in rules.values() if "ExpirationInDays" in r} == {
        "work/",
        "sessions/",
    }


def test_bucket_is_private_encrypted_and_tls_only(synthesized: Synthesized) -> None:
    bucket = _data_bucket(synthesized)

    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    denies = [
        statement
        for policy in synthesized.resources("AWS::S3::BucketPolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny"
    ]
    assert any(s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false" for s in denies)


def test_object_created_events_reach_eventbridge(synthesized: Synthesized) -> None:
    notifications = _data_bucket(synthesized)["NotificationConfiguration"]

    assert notifications["EventBridgeConfiguration"] == {"EventBridgeEnabled": True}


@pytest.mark.usefixtures("node")
def test_cors_origins_from_the_command_line_are_split_at_commas() -> None:
    from aws_cdk import App, Stack
    from aws_cdk.assertions import Template

    from sluiceway_infra.storage import Storage

    stack = Stack(App(), "Origins")
    # What `cdk deploy -c corsAllowedOrigins=...` passes: one string, never a list.
    Storage(stack, "Storage", cors_allowed_origins="https://a.example, https://b.example")

    [bucket] = [
        b["Properties"]
        for lid, b in Template.from_stack(stack).find_resources("AWS::S3::Bucket").items()
        if lid.startswith("StorageDataBucket")
    ]
    [rule] = bucket["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedOrigins"] == ["https://a.example", "https://b.example"]


def test_a_kms_key_of_the_deployers_encrypts_the_bucket_and_the_functions_may_use_it(
    synthesized_with_options: Synthesized,
) -> None:
    from conftest import KEY_ARN

    synthesized = synthesized_with_options
    [encryption] = _data_bucket(synthesized)["BucketEncryption"][
        "ServerSideEncryptionConfiguration"
    ]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": KEY_ARN,
    }
    assert encryption["BucketKeyEnabled"] is True
    # every function that touches objects (the API presigns uploads) may use the key
    granted = [
        body
        for body in synthesized.resources("AWS::IAM::Policy").values()
        for statement in body["Properties"]["PolicyDocument"]["Statement"]
        if statement.get("Resource") == KEY_ARN and "kms:GenerateDataKey*" in statement["Action"]
    ]
    assert len(granted) >= 3
