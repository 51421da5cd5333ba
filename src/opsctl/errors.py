"""One error tree, one exit point.

Commands and the engine raise these; ``opsctl.cli.main`` turns them into a short message and an exit
code.  Anything else that escapes is a bug: its traceback goes to a file, not to the terminal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# characters that would split or recolour a `file:line:col: message` line when a file's name holds them
_CONTROL_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def shown_name(file: str) -> str:
    """A file name as one line of text: control characters written as Python escapes (``\\n``,
    ``\\x1b``), the rest as it is (``--output json`` keeps the real name)."""
    return _CONTROL_IN_NAME.sub(lambda m: repr(m.group())[1:-1], file)


class ExitCode:
    OK = 0
    FAILED = 1  # a step failed or verification failed
    INVALID = 2  # invalid runbook, parameters or usage
    NOT_CONFIRMED = 3  # declined, or no terminal without --yes
    BACKEND = 4  # backend connection / configuration error
    INTERRUPTED = 130


class OpsctlError(Exception):
    """Base of every error opsctl reports to the user."""

    exit_code = ExitCode.FAILED
    # what a mutating action had already done when it was stopped (Ctrl-C, timeout), for the run log
    partial: object = None
    partial_note: str = ""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def with_partial(self, result: object, note: str) -> OpsctlError:
        """Attach what was done before the stop (re-raise the same error afterwards)."""
        self.partial, self.partial_note = result, note
        return self

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Location:
    file: str
    line: int = 0  # 1-based; 0 when unknown
    column: int = 0  # 1-based; 0 when unknown
    path: str = ""  # json-path-ish: mitigate[1].with.replicas

    def __str__(self) -> str:
        file = shown_name(self.file)
        pos = f"{file}:{self.line}:{self.column}" if self.line else file
        return f"{pos}: {self.path}" if self.path else pos


MAX_FILE_ERRORS = 1000  # errors reported per runbook file; past it, one line says the check stopped


class RunbookError(OpsctlError):
    """Something is wrong in a runbook file: always carries a location."""

    exit_code = ExitCode.INVALID

    def __init__(self, message: str, location: Location) -> None:
        super().__init__(message)
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        loc = self.location
        return {"file": loc.file, "line": loc.line, "column": loc.column, "path": loc.path,
                "message": self.message}


class ValidationFailed(OpsctlError):
    """A collection of RunbookErrors from one or more files."""

    exit_code = ExitCode.INVALID

    def __init__(self, errors: list[RunbookError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class UsageError(OpsctlError):
    """Bad command-line input: unknown runbook, bad --param, unknown option."""

    exit_code = ExitCode.INVALID


class ConfigError(OpsctlError):
    """opsctl.yaml / environment selection is wrong."""

    exit_code = ExitCode.BACKEND


class BackendError(OpsctlError):
    """A backend could not be reached, refused us, or is misconfigured."""

    exit_code = ExitCode.BACKEND

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


class Unresponsive(BackendError):
    """The server accepts connections but does not answer within its deadline (stopped, hung, a
    network black hole).  Never retried: a hung server costs one deadline, not one per attempt."""


class ActionError(OpsctlError):
    """An action ran but could not do its job (bad target, refused by a guard, ...)."""

    exit_code = ExitCode.FAILED


class ArgumentError(ActionError):
    """The action's arguments pass the schema but do not make sense together (a missing identifier,
    two alternatives at once): bad input, exit 2, never retried."""

    exit_code = ExitCode.INVALID


class StepTimeout(ActionError):
    pass


class ReadOnlyViolation(ActionError):
    """A guarded backend client (handed to a read-only step, to plan(), to anything in a dry-run)
    refused a call that could mutate: a bug in the action or crafted input.  Exit 1, never retried,
    and never reported as "the plan refuses" by a dry-run."""

    def __init__(self, backend: str, operation: str, detail: str = "") -> None:
        super().__init__(f"read-only guard: {backend} refused {operation}: read-only code (a read-only "
                         "step, a plan() or a dry-run) may not call it" + (f" ({detail})" if detail else ""))
        self.backend, self.operation = backend, operation


class Cancelled(OpsctlError):
    """Raised inside actions when the run was interrupted or the step timed out."""

    exit_code = ExitCode.INTERRUPTED


class NotConfirmed(OpsctlError):
    exit_code = ExitCode.NOT_CONFIRMED


class PlanDrift(NotConfirmed):
    """What was reviewed no longer matches the live state (a stale plan file, or targets that
    appeared after the confirmation): nothing is changed, exit 3."""


class LockBusy(NotConfirmed):
    """Another run holds the apply lock of the same target and did not release it in time."""


def caused_by_ctrl_c(e: BaseException) -> bool:
    """Whether ``e`` is a KeyboardInterrupt that Python wrapped in another exception: Ctrl-C while a
    class was being created (``RuntimeError: Error calling __set_name__``, seen while ``platform``
    or a dataclass module was imported lazily).  A broad ``except Exception`` must let it go on as
    the Ctrl-C it is, not report a crash or a broken runbook."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


# ---- secrets: one registry, masked wherever text leaves the process ------------------------------
# Values of secret parameters, backend passwords, webhook URLs... registered as soon as they are
# known (parameters parsed, environment loaded), and masked in stdout/stderr, the run log, reports,
# plan files and crash.log.  A secret of 8 characters or more is masked wherever it appears; a
# shorter one only where it stands as a whole token (not inside another word), so that
# `-p token=ab` does not garble every "ab" of the output.  A tiny one (1-3 characters: "1", "a",
# "ok") would garble text even as a token ("exit 1", "in a failure", "127.0.0.1"): it is masked
# only as an exact value: a quoted string or the value after "=" (and, in structured data, a value
# equal to it: audit.redact), and inside the texts that were rendered from it (a runbook's message
# "token {{ params.token }} rejected" is registered with its masked rendering: register_rendering).
_SECRETS: set[str] = set()
_SHORT = 8
_TINY = 4
_RENDERINGS: dict[str, str] = {}  # a text rendered with a tiny secret -> the same text masked
_pattern: object = None  # compiled lazily; reset when a secret is added


def register_secret(*values: object) -> None:
    global _pattern
    for v in values:
        if isinstance(v, str) and v.strip() and v not in _SECRETS:
            _SECRETS.add(v)
            _pattern = None


def register_rendering(text: str, masked: str) -> None:
    """``text`` (rendered from a template with a tiny secret) is shown as ``masked`` wherever it appears."""
    global _pattern
    if text and text != masked and _RENDERINGS.get(text) != masked:
        _RENDERINGS[text] = masked
        _pattern = None


def registered_secrets() -> tuple[str, ...]:
    return tuple(_SECRETS)


def tiny_secrets() -> frozenset[str]:
    return frozenset(s for s in _SECRETS if len(s) < _TINY)


def mask(text: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """``text`` with every registered (and every ``extra``) secret replaced by ``***``."""
    import re

    global _pattern
    if extra:
        register_secret(*extra)
    if not (_SECRETS or _RENDERINGS) or not text:
        return text
    if _pattern is None:
        parts = [re.escape(r) for r in sorted(_RENDERINGS, key=len, reverse=True)]
        for s in sorted(_SECRETS, key=len, reverse=True):  # longest first: a secret inside another
            e = re.escape(s)
            if len(s) >= _SHORT:
                parts.append(e)
            elif len(s) >= _TINY:
                parts.append(rf"(?<![A-Za-z0-9]){e}(?![A-Za-z0-9])")
            else:  # an exact value: "x" / 'x' / =x
                parts.append(rf"(?<=\"){e}(?=\")|(?<='){e}(?=')|(?<==){e}(?![A-Za-z0-9._-])")
        _pattern = re.compile("|".join(parts))
    return _pattern.sub(lambda m: _RENDERINGS.get(m.group(0), "***"), text)  # type: ignore[attr-defined]
