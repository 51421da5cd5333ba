"""moto's SQS made to scale and to answer cheaply, in the moto server process only (opsctl talks to
it over HTTP; see ``moto_patches.serve``).  Same answers, same errors as moto's own code: these
patches remove work that is quadratic in queue depth or constant per request, nothing else."""

from __future__ import annotations

import functools
import threading
from typing import Any


def speed_up_moto_sqs() -> None:
    """moto 5's SQS is quadratic in queue depth: every send computes every queue attribute (three
    scans of all messages, each calling a slow datetime-based clock per message) and every delete
    scans all messages twice.  10,000 messages take hours.  These patches keep moto's behaviour
    (same attributes, same errors) but compute message counts only when asked for, use a cheap
    clock, and delete in one locked pass.  They run inside the moto server process only; opsctl
    still talks to it over HTTP.  See docs/backends/aws.md, "moto is not AWS"."""
    import string
    import time as _time

    import moto.sqs.models as m
    from moto.core.utils import camelcase_to_underscores

    def unix_time(dt: Any = None) -> float:
        return m.unix_time.__wrapped__(dt) if dt is not None else _time.time()  # type: ignore[attr-defined]

    unix_time.__wrapped__ = m.unix_time  # type: ignore[attr-defined]
    m.unix_time = unix_time
    m.unix_time_millis = lambda dt=None: unix_time(dt) * 1000.0
    snake = functools.lru_cache(maxsize=None)(camelcase_to_underscores)  # a regex per name and call
    counted = {"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed",
               "ApproximateNumberOfMessagesNotVisible"}

    class LazyAttributes(dict):  # type: ignore[type-arg]
        def __init__(self, queue: Any, cheap: dict[str, Any]) -> None:
            super().__init__(cheap)
            self._queue, self._done = queue, False

        def _complete(self) -> None:
            if not self._done:
                self._done = True
                for k in counted:
                    dict.__setitem__(self, k, getattr(self._queue, snake(k)))

        def get(self, key: Any, default: Any = None) -> Any:
            if key in counted:
                self._complete()
            return dict.get(self, key, default)

        def __getitem__(self, key: Any) -> Any:
            if key in counted:
                self._complete()
            return dict.__getitem__(self, key)

        def __contains__(self, key: Any) -> bool:
            return key in counted or dict.__contains__(self, key)

        def items(self) -> Any:
            self._complete()
            return dict.items(self)

        def keys(self) -> Any:
            self._complete()
            return dict.keys(self)

        def __iter__(self) -> Any:
            self._complete()
            return dict.__iter__(self)

    def attributes(self: Any) -> dict[str, Any]:
        # moto's Queue.attributes, minus the eager counts (LazyAttributes adds them on demand)
        names = [a for a in self.BASE_ATTRIBUTES if a not in counted]
        names += self.FIFO_ATTRIBUTES if self.fifo_queue else []
        names += self.KMS_ATTRIBUTES if self.kms_master_key_id else []
        result = {a: getattr(self, snake(a)) for a in names}
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            result["RedrivePolicy"] = m.json.dumps(self.redrive_policy)
        result = {k: str(v).lower() if isinstance(v, bool) else v for k, v in result.items()}
        return LazyAttributes(self, result)

    m.Queue.attributes = property(attributes)  # type: ignore[assignment]

    # a receipt handle is 185 random lowercase letters, drawn one random.choice at a time (a tenth
    # of the server's CPU per received message): drawn at once, same alphabet, length, generator
    m.generate_receipt_handle = functools.partial(random_text, 185, string.ascii_lowercase)

    # receive_message deep-copies every message it returns (its attributes, receipt handle history
    # and all) only to filter the copy's message attributes, which replaces that dict: a shallow copy
    # gives the same answer (the copy is read once, to build the response, and then dropped)
    deepcopy = m.deepcopy

    def copy_message(obj: Any, memo: Any = None) -> Any:
        if type(obj) is m.Message:
            new = object.__new__(m.Message)
            new.__dict__.update(obj.__dict__)
            return new
        return deepcopy(obj, memo)

    m.deepcopy = copy_message  # type: ignore[assignment]

    # the MD5 of a message's attributes is computed for the send's answer and again for every
    # receive's, from the same attributes (moto replaces the dict, never changes it): remember it
    # with the dict it was computed from; a receive that keeps every attribute keeps that dict
    md5_of = m.Message.attribute_md5.fget  # type: ignore[attr-defined]

    def attribute_md5(self: Any) -> str:
        done = self.__dict__.get("_md5_of_attributes")
        if done is None or done[0] is not self.message_attributes:
            done = self.__dict__["_md5_of_attributes"] = (self.message_attributes, md5_of(self))
        return str(done[1])

    m.Message.attribute_md5 = property(attribute_md5)  # type: ignore[assignment]
    filter_attributes = m._filter_message_attributes

    def _filter_message_attributes(message: Any, names: list[str]) -> None:
        given = message.message_attributes
        filter_attributes(message, names)
        if len(message.message_attributes) == len(given):
            message.message_attributes = given  # all kept: the same attributes, the same dict

    m._filter_message_attributes = _filter_message_attributes  # type: ignore[assignment]

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return
            for i, msg in enumerate(self._messages):  # noqa: B007 - i is used after the loop
                if msg.receipt_handle == receipt_handle or receipt_handle in msg._old_receipt_handles:
                    break
            else:
                raise m.ReceiptHandleIsInvalid()
            del self._messages[i]
            self.pending_messages.discard(msg)
            self.deleted_messages.update(msg.all_receipt_handles)

    m.Queue.delete_message = delete_message  # type: ignore[assignment]

    class Visible:
        """Queue.messages, lazily: receive_message stops iterating once it has enough."""

        def __init__(self, queue: Any) -> None:
            self._all = list(queue._messages)

        def __iter__(self) -> Any:
            return (x for x in self._all if x.visible and not x.delayed)

        def __len__(self) -> int:
            return sum(1 for _ in self)

        def __bool__(self) -> bool:
            return any(True for _ in self)

    m.Queue.messages = property(Visible)  # type: ignore[assignment]

    # moto checks visibility and marks a message received without a lock, so two concurrent
    # receivers can both get the same message; SQS hides a message from other receivers at once
    receive, receiving = m.SQSBackend.receive_message, threading.Lock()

    def receive_message(self: Any, queue_name: str, count: int, wait_seconds_timeout: int,
                        visibility_timeout: int, message_attribute_names: Any = None) -> Any:
        end = _time.time() + wait_seconds_timeout
        while True:  # long polling outside the lock, so one empty queue does not block the others
            with receiving:
                got = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            if got or _time.time() >= end:
                return got
            self.get_queue(queue_name).wait_for_messages(min(0.2, max(0.01, end - _time.time())))

    m.SQSBackend.receive_message = receive_message  # type: ignore[assignment]

    # moto checks each received message's retention by building all the queue's attributes three
    # times (get_queue_attributes for one name): read the one attribute
    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > _time.time())

    m.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period)


def random_text(length: int, alphabet: str) -> str:
    """``length`` characters drawn uniformly from ``alphabet`` (at most 256) with moto's own seedable
    generator, as ``"".join(random.choice(alphabet) ...)`` does, but from random bytes at once:
    bytes past the last whole multiple of the alphabet's size are dropped, the rest map to it."""
    from moto.moto_api._internal import mock_random

    table, drop = _byte_tables(alphabet)
    text = b""
    while len(text) < length:
        text += mock_random.randbytes(length + length // 4 + 8).translate(None, drop)
    return text[:length].translate(table).decode()


@functools.cache
def _byte_tables(alphabet: str) -> tuple[bytes, bytes]:
    """(byte -> character of ``alphabet``, the bytes to drop) for ``random_text``."""
    size = len(alphabet)
    keep = 256 - 256 % size
    return bytes(ord(alphabet[i % size]) for i in range(256)), bytes(range(keep, 256))


def cheap_sqs_calls() -> None:
    """Per-request work whose answer never changes, done once: moto's JSON answers for SQS
    serialized by ``sqs_json_serializer()``, and ``call_action``'s list of the response class's
    methods (``inspect.getmembers`` on every request) remembered per class (moto's classes, and the
    patches in ``moto_patches``, are complete when their module is imported, before any request)."""
    import string

    import moto.core.responses as responses
    import moto.core.serialize as ser

    ser.SERVICE_SPECIFIC_SERIALIZERS.setdefault("sqs", {})["json"] = sqs_json_serializer()
    # every answer's request id: 52 letters and digits, one random.choice at a time (~5 % of the
    # server's CPU per SQS call); what moto's gen_amzn_requestid_long does, drawn at once
    alnum = string.ascii_letters + string.digits

    def gen_amzn_requestid_long(headerdict: dict[str, Any] | None = None) -> str:
        req_id = random_text(52, alnum)
        if isinstance(headerdict, dict):
            headerdict["x-amzn-requestid"] = req_id
        return req_id

    responses.gen_amzn_requestid_long = gen_amzn_requestid_long
    responses.method_names_from_class = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
        responses.method_names_from_class)


def sqs_json_serializer() -> type:
    """moto's JSON serializer, picking each member's value from a plain dict by a remembered list
    of keys.

    moto serializes every JSON answer by walking the operation's output shape and, for every member
    of every structure (each message, each message attribute), building an ``AttributePickerContext``
    and six alias providers to find which key of the Python value holds it: ~45 % of the server's
    CPU per SQS call under bench/sqs_redrive_throughput.py.  For a plain ``dict`` value (what
    moto's SQS answers are made of) the keys those providers try depend only on the member's shape
    and name (a dict has no ``Meta`` aliases, its class name is always ``dict``), so they are
    computed once per member, by moto's own picker, and tried in the same order: the same value is
    picked.  Any other value, or a service with response transformers registered, goes through
    moto's picker as before (tests/testing/test_moto_sqs.py compares the two answers)."""
    import moto.core.serialize as ser

    class SqsJSONSerializer(ser.JSONSerializer):
        # structure shape -> its members: (name, shape, keys tried, serialized name, type)
        _plans: dict[Any, list[tuple[str, Any, tuple[str, ...], str, str]]] = {}

        def _plan(self, shape: Any) -> list[tuple[str, Any, tuple[str, ...], str, str]]:
            plan = self._plans.get(shape)
            if plan is None:  # shapes are cached by moto's service model: a few dozen for SQS
                plan = []
                for key, member in shape.members.items():
                    member.parent = shape  # what moto sets before picking (ShapePrefixAlias)
                    context = ser.AttributePickerContext(
                        obj={}, key=key, shape=member, operation_model=self.operation_model,
                        service_model=self.operation_model.service_model)
                    keys = tuple(self._value_picker.get_possible_keys(context))
                    plan.append((key, member, keys, member.serialization.get("name", key), member.type_name))
                self._plans[shape] = plan
            return plan

        def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
            picker = self._value_picker
            if type(value) is not dict or shape.is_document_type \
                    or getattr(picker, "response_transformers", None) \
                    or not hasattr(picker, "get_possible_keys"):
                super()._serialize_type_structure(serialized, value, shape, key)
                return
            wrapper: Any = {} if key else serialized
            for name, member, keys, serialized_name, type_name in self._plan(shape):
                for k in keys:
                    if k in value:
                        got = value[k]
                        break
                else:
                    continue
                if got is None:
                    continue
                # moto's string and integer serializers give back a plain str or int unchanged
                if (type_name == "string" and type(got) is str) or \
                        (type_name in ("integer", "long") and type(got) is int):
                    wrapper[serialized_name] = got
                else:
                    self._serialize(wrapper, got, member, name)
            if key:
                self._default_serialize(serialized, wrapper, shape, key)

    return SqsJSONSerializer
