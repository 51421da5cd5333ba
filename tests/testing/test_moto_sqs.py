"""The kit's moto SQS patches give moto's own answers: the cheap serializer against moto's, and the
shallow message copy and receipt handles through the real server."""

from __future__ import annotations

import re
import string
from typing import Any

import pytest

from opsctl.testing.moto_sqs import random_text, sqs_json_serializer
from tests.fixtures.aws import Moto, make_queue_with_dlq

pytestmark = pytest.mark.aws


def _message(i: int) -> dict[str, Any]:
    return {"MessageId": f"id-{i}", "ReceiptHandle": "r" * 185, "MD5OfBody": "0" * 32, "Body": f"body {i} é",
            "MessageAttributes": {
                "s": {"DataType": "String", "StringValue": "é"},
                "n": {"DataType": "Number.float", "StringValue": "-1.5e3"},
                "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
                "snake": {"data_type": "String", "string_value": "found by moto's xform_name alias"}},
            "MD5OfMessageAttributes": "1" * 32,
            "Attributes": {"SentTimestamp": "1700000000000", "MessageGroupId": "g1",
                           "ApproximateReceiveCount": "2"}}


class _Exotic:  # not a dict: values found by attribute, through moto's picker
    QueueUrls = ["http://localhost/123456789012/by-attribute"]


RESULTS: list[tuple[str, Any]] = [
    ("ReceiveMessage", {"Messages": [_message(i) for i in range(10)]}),
    ("ReceiveMessage", {"Messages": []}),
    ("ReceiveMessage", {}),
    ("SendMessageBatch", {"Successful": [{"Id": "0", "MessageId": "m0", "MD5OfMessageBody": "a" * 32,
                                          "MD5OfMessageAttributes": "b" * 32, "SequenceNumber": "1"}],
                          "Failed": [{"Id": "1", "SenderFault": True, "Code": "InvalidParameterValue",
                                      "Message": "too long"}]}),
    ("DeleteMessageBatch", {"Successful": [{"Id": str(i)} for i in range(10)], "Failed": []}),
    ("ChangeMessageVisibilityBatch", {"Successful": [{"Id": "0"}], "Failed": [
        {"Id": "1", "SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": "gone"}]}),
    ("GetQueueAttributes", {"Attributes": {"ApproximateNumberOfMessages": "3", "FifoQueue": "false"}}),
    ("ListQueues", {"QueueUrls": ["http://localhost/123456789012/a", "http://localhost/123456789012/b"]}),
    ("ListQueues", _Exotic()),
]


@pytest.mark.parametrize(("operation", "result"), RESULTS,
                         ids=[f"{o}-{i}" for i, (o, _) in enumerate(RESULTS)])
def test_cheap_serializer_answers_like_moto(operation: str, result: Any) -> None:
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    operation_model = get_service_model("sqs").operation_model(operation)
    cheap = sqs_json_serializer()

    def answer(cls: type) -> Any:
        return cls(operation_model=operation_model, value_picker=XFormedAttributePicker()).serialize(result)

    expected = answer(JSONSerializer)
    assert answer(cheap) == expected
    assert answer(cheap) == expected  # again, from the remembered keys
    if operation == "ReceiveMessage" and result.get("Messages"):
        # not vacuous: moto's alias (snake_case keys) and base64 blobs are in the answer
        assert '"StringValue": "found by moto' in expected["body"] and '"AAH/"' in expected["body"]
    remembered = len(cheap._plans)  # type: ignore[attr-defined]
    answer(cheap)
    assert len(cheap._plans) == remembered  # type: ignore[attr-defined]  # bounded by the model's shapes


def test_received_copy_is_filtered_and_the_stored_message_is_not(moto: Moto) -> None:
    # moto receives a shallow copy of the message now: filtering the copy's attributes must leave
    # the queue's message whole, and each receive gives a new receipt handle of 185 letters
    queue, _ = make_queue_with_dlq(moto, "copies")
    sqs = moto.client("sqs")
    sent = sqs.send_message(QueueUrl=queue, MessageBody="x", MessageAttributes={
        "keep": {"DataType": "String", "StringValue": "k"},
        "drop": {"DataType": "Number", "StringValue": "1"}})
    first = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["keep"],
                                VisibilityTimeout=30)["Messages"]
    assert set(first[0]["MessageAttributes"]) == {"keep"}
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=first[0]["ReceiptHandle"],
                                  VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=queue, MessageAttributeNames=["All"], VisibilityTimeout=30,
                                AttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert set(again[0]["MessageAttributes"]) == {"keep", "drop"}
    # the attributes' MD5 (remembered from the send) is the one of what each receive returned
    assert again[0]["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert first[0]["MD5OfMessageAttributes"] != sent["MD5OfMessageAttributes"]
    alone = sqs.send_message(QueueUrl=queue, MessageBody="y", MessageAttributes={
        "keep": {"DataType": "String", "StringValue": "k"}})
    assert first[0]["MD5OfMessageAttributes"] == alone["MD5OfMessageAttributes"]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    handles = [first[0]["ReceiptHandle"], again[0]["ReceiptHandle"]]
    assert handles[0] != handles[1] and all(re.fullmatch("[a-z]{185}", h) for h in handles), handles
    with pytest.raises(sqs.exceptions.ClientError, match="ReceiptHandleIsInvalid"):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle="not-a-handle")
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=handles[1])
    left = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in left] == ["y"]


def test_random_text_draws_every_character_of_the_alphabet_and_only_those(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.moto_api._internal import mock_random

    lower, alnum = string.ascii_lowercase, string.ascii_letters + string.digits
    for alphabet, length in ((lower, 185), (alnum, 52)):
        texts = [random_text(length, alphabet) for _ in range(200)]
        assert all(len(t) == length and set(t) <= set(alphabet) for t in texts)
        assert set("".join(texts)) == set(alphabet) and len(set(texts)) == len(texts)
    # uniform: each byte value maps to one character, and the bytes past the last whole multiple
    # of the alphabet (26 * 9 = 234, 62 * 4 = 248) are dropped, not mapped to the first ones
    monkeypatch.setattr(mock_random, "randbytes", lambda n: bytes(i % 256 for i in range(n)))
    assert random_text(234, lower) == lower * 9
    assert random_text(248, alnum) == alnum * 4
