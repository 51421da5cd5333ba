"""The action contract.  (``Plan``/``Change``, what a mutating action returns, are records: see
``opsctl.records``.)

An action is a registered class that owns its name, its argument schema, whether it is read-only,
and the code that talks to one backend.  The executor, never the action, decides what runs:

* read-only actions: ``run()`` returns a JSON-serialisable result;
* mutating actions: ``plan()`` (read-only, live lookups) returns the concrete changes, the executor
  shows them, stops there on --dry-run, asks for confirmation, then calls ``apply(plan)``, the only
  code that mutates.

Backend client libraries are imported inside methods (or through ``opsctl.backends.*``), never at
module import time, so ``opsctl --help`` and ``opsctl validate`` stay fast.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Protocol

from opsctl.actions.needs import Need
from opsctl.errors import Cancelled, StepTimeout
from opsctl.records import Plan


class ProgressHandle(Protocol):
    def advance(self, n: float = 1, **fields: Any) -> None: ...
    def update(self, *, total: float | None = None, completed: float | None = None,
               description: str | None = None, **fields: Any) -> None: ...


class Reporter(Protocol):
    """What the renderer offers to running actions (progress bars, log lines)."""

    def progress(self, step_id: str, description: str, total: float | None) -> Any: ...
    def log(self, step_id: str, message: str) -> None: ...


class _NullProgress:
    def advance(self, n: float = 1, **fields: Any) -> None:
        pass

    def update(self, **kw: Any) -> None:
        pass


class ActionContext:
    """Everything an action may use at run time.  One per step execution.

    ``backend_config(name)`` gives the selected environment's section for a backend (may be empty:
    the backend module then falls back to the standard variables such as DATABASE_URL).
    ``client(key, factory)`` caches one client per run, shared by the steps of that run.
    Long loops must call ``check_cancelled()`` (or use ``sleep()``), so that a step timeout or
    Ctrl-C stops the work and not just the waiting.

    ``read_only`` (always true in a dry-run) tells the backend factories (``opsctl.backends``) to
    hand out guarded clients that refuse every mutating call, whatever the action's code does: the
    engine sets it for read-only steps, for the plan() of mutating steps and for a whole dry-run;
    only apply() gets a context without it.  Guarded and unguarded clients are never the same
    cached object (see ``opsctl.backends.readonly``).
    """

    def __init__(self, *, step_id: str = "", dry_run: bool = False, read_only: bool = False,
                 environment: Any = None, clients: dict[str, Any] | None = None,
                 clients_lock: threading.Lock | None = None,
                 cancelled: threading.Event | None = None, deadline: float | None = None,
                 reporter: Reporter | None = None, resumed_plan: dict[str, Any] | None = None) -> None:
        self.step_id = step_id
        # --resume of a run whose apply of this step was cut short: that confirmed plan's data; an
        # action whose change is bounded (a redrive's max_messages) finishes it instead of
        # planning a new bound (None otherwise)
        self.resumed_plan = resumed_plan
        self.dry_run = dry_run
        self.read_only = read_only or dry_run
        self.environment = environment
        self._clients = clients if clients is not None else {}
        self._clients_lock = clients_lock or threading.Lock()
        self.cancelled = cancelled or threading.Event()
        self.deadline = deadline  # time.monotonic() value or None
        self._reporter = reporter
        self.timed_out = False

    def as_read_only(self) -> ActionContext:
        """This call's context (same clients, deadline, cancellation) with guarded clients: for a
        plan() made from apply()'s side, e.g. the re-plan under an apply lock."""
        view = copy.copy(self)
        view.read_only = True
        return view

    def child(self, deadline: float | None, cancelled: threading.Event) -> ActionContext:
        """A read-only context for work this call runs in threads of its own (the probes of a
        sweep): the run's clients, a deadline of its own (never later than this one's), its own
        cancellation, no progress output."""
        if self.deadline is not None:
            deadline = self.deadline if deadline is None else min(deadline, self.deadline)
        return ActionContext(step_id=self.step_id, dry_run=self.dry_run, read_only=True,
                             environment=self.environment, clients=self._clients,
                             clients_lock=self._clients_lock, cancelled=cancelled, deadline=deadline)

    # ---- configuration and clients -------------------------------------------------------------
    def backend_config(self, name: str) -> dict[str, Any]:
        if self.environment is None:
            return {}
        return dict(self.environment.backend(name))

    def client(self, key: str, factory: Callable[[], Any]) -> Any:
        # One lock per key: a slow factory (importing the kubernetes client takes seconds on a
        # loaded machine) must not hold up the steps of other backends past their deadlines.
        with self._clients_lock:
            if key in self._clients:
                return self._clients[key]
            lock = self._clients.setdefault(f"\0lock:{key}", threading.Lock())
        with lock:
            with self._clients_lock:
                if key in self._clients:
                    return self._clients[key]
            made = factory()
            with self._clients_lock:
                self._clients[key] = made
            return made

    def forget(self, key: str) -> None:
        """Drop a cached client (e.g. a cached connection failure that may have healed)."""
        with self._clients_lock:
            self._clients.pop(key, None)

    # ---- time and cancellation -----------------------------------------------------------------
    def remaining(self, default: float | None = None) -> float | None:
        """Seconds left before this step's deadline (``default`` when there is none)."""
        if self.deadline is None:
            return default
        left = max(0.0, self.deadline - time.monotonic())
        return left if default is None else min(left, default)

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("interrupted")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
            raise StepTimeout("step timed out")

    def sleep(self, seconds: float) -> None:
        """Sleep that wakes up (and raises) on cancellation or deadline."""
        end = time.monotonic() + seconds
        while True:
            self.check_cancelled()
            left = end - time.monotonic()
            if left <= 0:
                return
            wait = min(left, 0.2)
            if self.deadline is not None:
                wait = min(wait, max(0.0, self.deadline - time.monotonic()) + 0.001)
            self.cancelled.wait(wait)

    # ---- output --------------------------------------------------------------------------------
    @contextmanager
    def progress(self, description: str, total: float | None = None) -> Iterator[ProgressHandle]:
        """A progress bar (or spinner when total is None) for long work inside a step."""
        if self._reporter is None:
            yield _NullProgress()
            return
        with self._reporter.progress(self.step_id, description, total) as handle:
            yield handle

    def log(self, message: str) -> None:
        if self._reporter is not None:
            self._reporter.log(self.step_id, message)


class Action:
    """Base class of every action.  Subclasses set the class attributes and implement either
    ``run`` (read-only) or ``plan`` + ``apply`` (mutating)."""

    name: ClassVar[str] = ""
    backend: ClassVar[str] = "core"
    read_only: ClassVar[bool] = True
    summary: ClassVar[str] = ""
    # JSON Schema of the `with:` mapping; always an object with additionalProperties: false
    schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {},
                                        "additionalProperties": False}
    # what it needs on the server (Kubernetes RBAC, IAM, PostgreSQL roles, Redis/Kafka ACLs): see
    # opsctl.actions.needs; None means "not declared", which the meta-tests refuse
    permissions: ClassVar[tuple[Need, ...] | None] = None
    # arguments that make the action itself wait for convergence, bounded by the step's deadline,
    # where the wait is not a plain re-check (`within:` is the norm): kafka.lag judges the drain
    # rate seen over the whole wait, kafka.brokers ends its last probe before the deadline with
    # its verdict.  The runbook meta-tests count them as a verify step's window.
    window_args: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args: dict[str, Any], ctx: ActionContext) -> None:
        self.args = args
        self.ctx = ctx

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        """Semantic checks beyond the schema, run by ``opsctl validate`` before anything executes.

        ``args`` are the raw (untemplated) values: skip values that are template strings.
        Returns (argument-name, message) pairs; the validator adds file:line:col.
        """
        return []

    def run(self) -> Any:
        raise NotImplementedError(f"{self.name} is mutating: it has plan()/apply(), not run()")

    def plan(self) -> Plan:
        raise NotImplementedError(f"{self.name} is read-only: it has run(), not plan()")

    def apply(self, plan: Plan) -> Any:
        raise NotImplementedError(f"{self.name} is read-only: it has run(), not apply()")

    @classmethod
    def summarize(cls, result: Any) -> str:
        """One line for the human renderer; override for something better than a truncated repr."""
        if isinstance(result, dict):
            parts = [f"{k}={v}" for k, v in result.items()
                     if isinstance(v, str | int | float | bool) or v is None]
            text = ", ".join(parts)
        else:
            text = repr(result)
        return text if len(text) <= 160 else text[:157] + "..."


def type_schema(properties: dict[str, Any] | None = None, required: list[str] | None = None,
                **extra: Any) -> dict[str, Any]:
    """Build an action argument schema (closed object), in the style of c7n's ``type_schema``."""
    schema: dict[str, Any] = {"type": "object", "properties": properties or {},
                              "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)
