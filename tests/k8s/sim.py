"""The application processes that, in a real cluster, would run inside the fake kubelet's pods.

The fake kubelet only plays the node; the work a pod does against a real backend is played here,
tied to the pods' lifecycle as read from the real apiserver, so that what opsctl does to the pods
(restart, scale, env change) has its real effect on the backend:

* ``PodSessions``: each Ready pod of a deployment holds ``per_pod`` PostgreSQL connections; pods
  marked leaky keep theirs idle in transaction (a connection leak); a pod that goes away closes them;
* ``PodConsumers``: a real Kafka consumer-group member is connected while ``connected()`` holds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any


class PodSessions:
    def __init__(self, pg: Any, core: Any, ns: str, selector: str, *, per_pod: int,
                 application_name: str) -> None:
        self.pg, self.core, self.ns, self.selector = pg, core, ns, selector
        self.per_pod, self.application_name = per_pod, application_name
        self.leaky: set[str] = set()  # pod uids whose connections leak (idle in transaction)
        self.conns: dict[str, list[Any]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def ready_pods(self) -> set[str]:
        pods = self.core.list_namespaced_pod(self.ns, label_selector=self.selector).items
        return {p.metadata.uid for p in pods if not p.metadata.deletion_timestamp and p.status
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}

    def leak_all(self) -> None:
        """Fault injection: every current pod's pool leaks from now on."""
        self.leaky |= set(self.conns)
        for uid in self.leaky:
            for c in self.conns.get(uid, []):
                c.execute("BEGIN")
                c.execute("SELECT txid_current()")

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            try:
                live = self.ready_pods()
            except Exception:  # noqa: BLE001 - the apiserver going away at the end of the session
                continue
            # a pod going away closes its connections first, as its process exits
            for uid in set(self.conns) - live:
                for c in self.conns.pop(uid):
                    with contextlib.suppress(Exception):
                        c.close()
            for uid in live - set(self.conns):
                self.conns[uid] = [self.pg.connect("app", "app", application_name=self.application_name)
                                   for _ in range(self.per_pod)]
        for conns in self.conns.values():
            for c in conns:
                with contextlib.suppress(Exception):
                    c.close()

    def wait_settled(self, expected_pods: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.conns) != expected_pods:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.conns)} pods hold sessions, expected {expected_pods}")
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


class PodConsumers:
    def __init__(self, bootstrap: str, topic: str, group: str, connected: Callable[[], bool]) -> None:
        self.bootstrap, self.topic, self.group, self.connected = bootstrap, topic, group, connected
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _is_connected(self) -> bool:
        try:
            return self.connected()
        except Exception:  # noqa: BLE001 - the apiserver going away at the end of the session
            return False

    def _loop(self) -> None:
        from kafka import KafkaConsumer

        consumer = None
        while not self.stop.is_set():
            ok = self._is_connected()
            if ok and consumer is None:
                try:
                    consumer = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap,
                                             group_id=self.group, auto_offset_reset="earliest",
                                             auto_commit_interval_ms=300, session_timeout_ms=6000,
                                             heartbeat_interval_ms=500)
                except Exception:  # noqa: BLE001 - NoBrokersAvailable: retry, as a real consumer does
                    time.sleep(0.3)
                    continue
            elif not ok and consumer is not None:
                consumer.close()
                consumer = None
            if consumer is not None:
                consumer.poll(timeout_ms=200)
            else:
                time.sleep(0.2)
        if consumer is not None:
            consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
