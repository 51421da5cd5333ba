"""Kubernetes client factory and the translation of client failures into opsctl errors.

Connection settings come from the environment's ``kubernetes: {kubeconfig, context}`` section, else
``$KUBECONFIG``, else (in a pod) the in-cluster service account, else ``~/.kube/config``.  The official
client is imported here, lazily, so that ``opsctl --help`` never pays for it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opsctl.errors import ActionError, BackendError

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0


class Kube:
    """The API groups opsctl uses, plus ``call`` which adds timeouts and error translation."""

    def __init__(self, api_client: Any, where: str) -> None:
        self.api_client = api_client
        self.where = where  # "context prod (https://...)" for messages

    # each API group on first use: importing a generated API class builds its hundreds of models
    # (CoreV1Api: seconds of CPU on a busy machine)
    @functools.cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @functools.cached_property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    @functools.cached_property
    def autoscaling(self) -> Any:
        from kubernetes import client

        return client.AutoscalingV1Api(self.api_client)

    @functools.cached_property
    def networking(self) -> Any:
        from kubernetes import client

        return client.NetworkingV1Api(self.api_client)

    def get(self, path: str, query: dict[str, Any] | None = None, what: str = "",
            timeout: float | None = None) -> Any:
        """GET an API path as plain JSON, without a generated API class or its models (doctor)."""
        def fetch(_request_timeout: Any) -> Any:
            request = self.api_client.param_serialize(
                "GET", path, query_params=list((query or {}).items()),
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            response = self.api_client.call_api(*request, _request_timeout=_request_timeout)
            response.read()
            return self.api_client.response_deserialize(response, {"200": "object"}).data

        return self.call(fetch, what=what or path, timeout=timeout)

    def call(self, fn: Callable[..., Any], *args: Any, what: str = "", timeout: float | None = None,
             **kwargs: Any) -> Any:
        """Call one API method; ``what`` names the object for a 404 message."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        read = READ_TIMEOUT if timeout is None else max(1.0, timeout)
        try:
            return fn(*args, _request_timeout=(CONNECT_TIMEOUT, read), **kwargs)
        except ApiException as e:
            raise self._api_error(e, what) from None
        except HTTPError as e:
            raise BackendError("kubernetes", f"cannot reach the API server ({self.where}): "
                               f"{_reason(e)}. Check the kubeconfig, the context and that the "
                               "cluster is up.") from None

    def _api_error(self, e: Any, what: str) -> Exception:
        msg = _api_message(e)
        if e.status == 401:
            return BackendError("kubernetes", f"the API server ({self.where}) rejected the credentials "
                                "(401 Unauthorized): refresh the token or check the kubeconfig user.")
        if e.status == 403:
            return BackendError("kubernetes", f"forbidden by RBAC ({self.where}): {msg}")
        if e.status == 404:
            return ActionError(f"{what or 'object'} not found" + (f" ({msg})" if msg and not what else ""))
        if e.status == 409:
            return ActionError(f"conflict on {what or 'object'}: it changed meanwhile ({msg}); plan again")
        return ActionError(f"kubernetes API error {e.status} on {what or 'request'}: {msg}")

    def to_dict(self, obj: Any) -> Any:
        """A client model as plain JSON data (camelCase keys, as kubectl shows them)."""
        return self.api_client.sanitize_for_serialization(obj)


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e
    text = str(reason)
    # urllib3 wraps the useful part ("Connection refused") in a long repr
    markers = {"Connection refused": "connection refused", "timed out": "timed out",
               "Name or service not known": "unknown host",
               "CERTIFICATE_VERIFY_FAILED": "TLS certificate not trusted"}
    for marker, short in markers.items():
        if marker in text:
            return short
    return text[:200]


def _api_message(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message", "")) or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster() -> bool:
    """Running in a pod: the API server's variables are set and the pod's service account token is
    mounted (the standard place; ``automountServiceAccountToken``)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and \
        os.path.isfile(os.path.join(SERVICE_ACCOUNT_DIR, "token"))


def connect(cfg: dict[str, Any]) -> Kube:
    """Build a client from an environment's ``kubernetes`` section (may be empty).

    Order: an explicit kubeconfig (``kubernetes.kubeconfig``, ``$KUBECONFIG``); else, inside a pod,
    the in-cluster configuration (the pod's service account token and CA, ``KUBERNETES_SERVICE_HOST``
    / ``_PORT``), so that a kubeconfig left in an image never replaces the pod's identity; else
    ``~/.kube/config``."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    conf = client.Configuration()
    kubeconfig = cfg.get("kubeconfig") or os.environ.get("KUBECONFIG")
    context = cfg.get("context")
    try:
        if kubeconfig or (not in_cluster() and os.path.exists(os.path.expanduser("~/.kube/config"))):
            path = os.path.expanduser(kubeconfig.split(os.pathsep)[0]) if kubeconfig else None
            if path and not os.path.exists(path):
                raise BackendError("kubernetes", f"kubeconfig {path} does not exist")
            config.load_kube_config(config_file=path, context=context, client_configuration=conf)
            where = f"context {context or 'current'}, {conf.host}"
        else:
            config.load_incluster_config(client_configuration=conf)
            where = f"in-cluster, service account of the pod, {conf.host}"
    except ConfigException as e:
        raise BackendError("kubernetes", f"no usable configuration: {e}. Set kubernetes.kubeconfig / "
                           "context in opsctl.yaml or KUBECONFIG, or run in a pod with a service "
                           "account token.") from None
    except yaml.YAMLError as e:  # never echo the file: it holds tokens
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BackendError("kubernetes", f"kubeconfig {kubeconfig} is not valid YAML{at}: "
                           f"{getattr(e, 'problem', None) or type(e).__name__}") from None
    except OSError as e:
        raise BackendError("kubernetes", f"cannot read kubeconfig {kubeconfig}: {e.strerror or e}") from None
    conf.retries = 0  # an unreachable server must fail fast, not after urllib3's three retries
    return Kube(client.ApiClient(conf), where)


def kube_for(ctx: Any) -> Kube:
    """The run's shared client for the selected environment; for read-only code
    (``ctx.read_only``) a separate one whose API client refuses any verb but get/list/watch."""
    cfg = ctx.backend_config("kubernetes")
    key = "kubernetes:" + json.dumps(cfg, sort_keys=True, default=str)
    kube: Kube = ctx.client(key, lambda: connect(cfg))
    if not ctx.read_only:
        return kube
    return ctx.client(key + ":read-only", lambda: read_only_kube(kube))


def read_only_kube(kube: Kube) -> Kube:
    """The same cluster and credentials, through an API client that only reads."""
    from opsctl.backends.readonly import read_only_api_client

    return Kube(read_only_api_client(kube.api_client.configuration), kube.where)


def delete_if_uid(uid: str) -> Any:
    """Delete options with a uid precondition: the API server deletes the object only if it is
    still the one that was planned (a recreated object of the same name answers 409)."""
    from kubernetes import client

    return client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))


def age_seconds(ts: Any) -> float | None:
    if ts is None:
        return None
    return round((datetime.now(UTC) - ts).total_seconds(), 1)


def iso(ts: Any) -> str | None:
    return ts.isoformat() if ts is not None else None
