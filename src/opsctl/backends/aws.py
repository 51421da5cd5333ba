"""AWS clients: the boto3 credential chain, one client per service per run, errors in opsctl's terms.

Configuration, in order: the environment's ``aws:`` section (``region``, ``profile``,
``endpoint_url``), then boto3's own chain (``AWS_PROFILE``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``, instance roles...).  boto3 is imported here,
inside functions, so that ``opsctl --help`` never pays for it.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsctl.backends.readonly import AwsRule, guard_aws_client
from opsctl.errors import ActionError, ArgumentError, BackendError

if TYPE_CHECKING:
    from opsctl.actions.base import ActionContext

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 20.0

# error codes that mean "who you are / what you may do", not "what you asked for"
_AUTH_CODES = {
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch", "AuthFailure",
    "UnauthorizedOperation", "InvalidAccessKeyId", "MissingAuthenticationToken",
}


# read timeouts are rounded down to one of these, so that a run creates few clients per service
_READ_STEPS = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0)
_CONNECT_STEPS = (0.1, 0.2, 0.5, 1.0, 2.0, 3.0)


def call_budget(cfg: dict[str, Any], left: float | None) -> tuple[float, float, int]:
    """(connect timeout, read timeout, total attempts) for calls made with ``left`` seconds before
    the step's deadline: every attempt, retries included, fits in that time, so a hung endpoint
    (accepts TCP, never answers) costs at most the step's deadline and ends as "did not answer in
    time" (exit 4), never as a step abandoned by the watchdog.  ``aws.read_timeout`` and
    ``aws.connect_timeout`` in the environment lower the caps (never raise them past the deadline)."""
    read_cap = float(cfg.get("read_timeout") or READ_TIMEOUT)
    connect_cap = float(cfg.get("connect_timeout") or CONNECT_TIMEOUT)
    if left is None:
        return min(connect_cap, read_cap), read_cap, 3
    # leave a little of the deadline for the answer to be handled and the step to record it
    usable = max(0.5, left * 0.85)
    connect = max([s for s in _CONNECT_STEPS if s <= min(connect_cap, usable * 0.2)] or [0.1])
    room = usable - connect
    read = max([s for s in _READ_STEPS if s <= min(read_cap, room)] or [max(0.1, min(read_cap, room))])
    attempts = int(max(1, min(3, usable // (connect + read))))
    return connect, round(read, 1), attempts


def new_session(cfg: dict[str, Any]) -> Any:
    """A boto3 session for an environment's ``aws`` section (clients made from one session share
    its loaded data: several services cost much less than a session each)."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what the other SDKs and Lambda use
        region = cfg.get("region") or os.environ.get("AWS_REGION") or None
        return boto3.Session(profile_name=cfg.get("profile") or None, region_name=region)
    except ProfileNotFound as e:
        raise BackendError("aws", f"{e}. Set aws.profile in opsctl.yaml or AWS_PROFILE to an "
                                  "existing profile.") from None


# a boto3 Session is not thread-safe: the steps (threads) that share a run's session make their
# clients from it one at a time (~15 ms each once the session has loaded its data)
_SESSION_LOCK = threading.Lock()


def _make_client(cfg: dict[str, Any], service: str, budget: tuple[float, float, int], session: Any) -> Any:
    """A client of ``session`` (new_session) with the timeouts and attempts of ``budget``."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, NoRegionError, ProfileNotFound

    connect, read, attempts = budget
    config = Config(connect_timeout=connect, read_timeout=read,
                    retries={"mode": "adaptive", "total_max_attempts": attempts}, max_pool_connections=32)
    try:
        with _SESSION_LOCK:
            # endpoint_url None lets botocore honour AWS_ENDPOINT_URL[_SERVICE] itself
            return session.client(service, config=config, endpoint_url=cfg.get("endpoint_url") or None)
    except ProfileNotFound as e:
        raise BackendError("aws", f"{e}. Set aws.profile in opsctl.yaml or AWS_PROFILE to an "
                                  "existing profile.") from None
    except NoRegionError:
        raise BackendError("aws", "no region configured. Set aws.region in opsctl.yaml, "
                                  "AWS_REGION or AWS_DEFAULT_REGION, or a region in the profile.") from None
    except BotoCoreError as e:
        raise BackendError("aws", f"cannot create the {service} client: {e}") from None


def client(ctx: ActionContext, service: str, *, allow: Mapping[str, AwsRule] | None = None) -> Any:
    """The run's client for ``service`` (``sqs``, ``rds``...), shared by steps: one per service and
    per time budget (timeouts and retries that fit the calling step's deadline, see call_budget),
    all made from the run's one session (a session each cost ~0.1 s of CPU: the endpoint data and
    the service model parsed again, the handlers registered again).

    For read-only code (``ctx.read_only``) it is a separate client guarded by a botocore hook
    (``opsctl.backends.readonly``) that refuses every operation but reads and the operations named
    in ``allow`` (with a check of their parameters); ``allow`` is ignored for apply()."""
    cfg = ctx.backend_config("aws")
    budget = call_budget(cfg, ctx.remaining())
    key = (f"aws:{service}:{cfg.get('profile')}:{cfg.get('region')}:{cfg.get('endpoint_url')}:"
           f"{budget[0]:g}/{budget[1]:g}x{budget[2]}")
    session = ctx.client(f"aws-session:{cfg.get('profile')}:{cfg.get('region')}", lambda: new_session(cfg))
    if not ctx.read_only:
        return ctx.client(key, lambda: _make_client(cfg, service, budget, session))
    key += ":read-only:" + ",".join(sorted(allow or {}))
    return ctx.client(key, lambda: guard_aws_client(_make_client(cfg, service, budget, session), allow))


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@dataclass
class Attempt:
    """How a call of an optional API went (see ``optional_api``): ``failure`` is "" when it worked."""

    failure: str = ""
    refused: bool = False  # the endpoint answered with an error (else botocore failed before one)


@contextmanager
def optional_api() -> Iterator[Attempt]:
    """For calls of an API the endpoint may not have (an emulator, an older region), whose failure
    is an answer, not an error: botocore's exceptions are swallowed and described in the Attempt,
    the AWS error code (or the HTTP status) of a refusal, the exception's name for anything else."""
    from botocore.exceptions import BotoCoreError, ClientError

    attempt = Attempt()
    try:
        yield attempt
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        attempt.failure, attempt.refused = error_code(e) or str(status or "") or "an error", True
    except BotoCoreError as e:
        attempt.failure = type(e).__name__


def _code_and_message(exc: Any) -> tuple[str, str]:
    """Error code and message; an XML error body sent to a JSON-protocol client (moto does this
    for authentication failures) is left unparsed by botocore: read its Code and Message."""
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "") or code)
    if message.lstrip().startswith("<"):
        found = dict(re.findall(r"<(Code|Message)>([^<]*)</\1>", message))
        code, message = found.get("Code", code), found.get("Message", "(no message)")
    return code, message


def _not_aws(what: str, detail: str) -> BackendError:
    """An answer that is not an AWS API response (an HTML error page from a proxy, a load balancer
    or an emulator that does not know the region): the endpoint or region is wrong."""
    return BackendError("aws", f"{what}: the endpoint did not answer like AWS ({detail}). Check "
                               "aws.endpoint_url / AWS_ENDPOINT_URL, the region and any proxy.")


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn botocore exceptions raised while doing ``what`` into BackendError / ActionError.

    Unreachable endpoints and credential problems are backend errors (exit 4); an AWS refusal
    about the request itself (not found, invalid state) means the action could not do its job.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ParamValidationError,
        PartialCredentialsError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise BackendError("aws", f"{what}: no AWS credentials found. Configure a profile "
                                  "(aws.profile or AWS_PROFILE), AWS_ACCESS_KEY_ID/"
                                  "AWS_SECRET_ACCESS_KEY, or an instance role.") from None
    except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError) as e:
        raise BackendError("aws", f"{what}: cannot reach the AWS endpoint ({e}). Check "
                                  "aws.endpoint_url / AWS_ENDPOINT_URL, the region and the "
                                  "network.") from None
    except ParamValidationError as e:  # e.g. an empty identifier templated from an unset param
        raise ArgumentError(f"{what}: invalid request: {' '.join(str(e).split())}") from None
    except ReadTimeoutError as e:
        raise BackendError("aws", f"{what}: the AWS endpoint accepted the connection but did not answer "
                                  f"in time ({e}); the step's deadline bounds every wait.") from None
    except ResponseParserError as e:
        status = re.search(r"<title>([^<]*)</title>", str(e))
        raise _not_aws(what, status.group(1) if status else "unparseable response") from None
    except ClientError as e:
        code, message = _code_and_message(e)
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == str(status) and message in ("(no message)", code) and (status or 0) >= 500:
            # no AWS error code, only an HTTP status: an error page, not an AWS refusal
            raise _not_aws(what, f"HTTP {status} without an AWS error") from None
        if code in _AUTH_CODES or status in (401, 403):
            raise BackendError("aws", f"{what}: access denied ({code}): {message}. Check the "
                                      "credentials and IAM permissions of the selected "
                                      "profile.") from None
        raise ActionError(f"{what}: {code}: {message}") from None
