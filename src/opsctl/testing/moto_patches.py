"""The moto server process: moto's SQS made to scale, ECS deployment history, Lambda trigger
qualifiers (patches that run inside that process only; opsctl talks to it over HTTP).

    python -c "from opsctl.testing.moto_patches import serve; serve(PORT)"
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opsctl.testing.moto_sqs import cheap_sqs_calls, speed_up_moto_sqs


def _keep_alias_qualifiers_of_triggers() -> None:
    """AWS keeps the qualifier a trigger was created with: ``FunctionName=fn:LIVE`` gives a mapping
    whose FunctionArn ends in ``:LIVE`` (it follows the alias).  moto 5 resolves the alias and stores
    the version's ARN, so a trigger bound to an alias would look pinned to a version.  Keep the
    alias, in the server process only."""
    import moto.awslambda.models as lm

    create = lm.LambdaBackend.create_event_source_mapping

    def create_event_source_mapping(self: Any, spec: dict[str, Any]) -> Any:
        given = str(spec.get("FunctionName", ""))
        esm = create(self, spec)
        qualifier = given.split(":")[-1] if given.count(":") in (1, 7) else ""
        if qualifier and not qualifier.isdigit() and qualifier != "$LATEST":
            base = ":".join(esm.function_arn.split(":")[:7])
            esm.function_arn = f"{base}:{qualifier}"
        return esm

    lm.LambdaBackend.create_event_source_mapping = create_event_source_mapping  # type: ignore[method-assign]


def _ecs_deployment_history() -> None:
    """AWS keeps a service's deployment history (ListServiceDeployments, DescribeServiceRevisions,
    2024); moto 5 has neither, and its service keeps the first deployment's task definition after an
    update.  Record each deployment (create_service, update_service with a new task definition or
    forceNewDeployment) and answer both calls, in the server process only."""
    import itertools
    import time as _time

    import moto.ecs.models as em
    import moto.ecs.responses as er
    from moto.core.responses import ActionResult

    history: dict[str, list[dict[str, Any]]] = {}
    revisions: dict[str, dict[str, Any]] = {}
    counter = itertools.count(1)

    def record(backend: Any, service: Any, cluster: str) -> None:
        n = next(counter)
        td = service.task_definition
        if not td.startswith("arn:"):
            td = service.task_definition = backend.describe_task_definition(td).arn
        arn = service.arn
        base = arn.replace(":service/", ":service-revision/")
        rev = {"serviceRevisionArn": f"{base}/{n}", "serviceArn": arn, "clusterArn": cluster,
               "taskDefinition": td, "createdAt": _time.time()}
        revisions[rev["serviceRevisionArn"]] = rev
        for d in history.get(arn, []):
            if d["status"] == "IN_PROGRESS":
                d["status"] = "SUCCESSFUL"
        history.setdefault(arn, []).append({
            "serviceDeploymentArn": f"{base.replace(':service-revision/', ':service-deployment/')}/{n}",
            "serviceArn": arn, "clusterArn": cluster, "createdAt": _time.time(),
            "startedAt": _time.time(), "finishedAt": _time.time(),
            "targetServiceRevisionArn": rev["serviceRevisionArn"], "status": "SUCCESSFUL"})
        for d in getattr(service, "deployments", []) or []:
            d["taskDefinition"] = td

    backend = em.EC2ContainerServiceBackend
    create, update = backend.create_service, backend.update_service

    def create_service(self: Any, cluster_str: str, *args: Any, **kwargs: Any) -> Any:
        service = create(self, cluster_str, *args, **kwargs)
        record(self, service, self._get_cluster(cluster_str).arn)
        return service

    def update_service(self: Any, props: dict[str, Any]) -> Any:
        cluster = props.get("cluster", "default")
        new_td, forced = props.get("task_definition"), props.get("force_new_deployment")
        service = self._get_service(cluster, props["service"].split("/")[-1])
        before = service.task_definition
        got = update(self, props)
        if forced or (new_td and got.task_definition != before):
            record(self, got, self._get_cluster(cluster).arn)
        return got

    em.EC2ContainerServiceBackend.create_service = create_service  # type: ignore[method-assign]
    em.EC2ContainerServiceBackend.update_service = update_service  # type: ignore[method-assign, assignment]

    def list_service_deployments(self: Any) -> ActionResult:
        service = self._get_param("service")
        cluster = self._get_param("cluster", "default")
        arn = self.ecs_backend._get_service(cluster, service.split("/")[-1]).arn
        found = sorted(history.get(arn, []), key=lambda d: d["createdAt"], reverse=True)
        return ActionResult({"serviceDeployments": found})

    def describe_service_revisions(self: Any) -> ActionResult:
        arns = self._get_param("serviceRevisionArns", [])
        missing = [{"arn": a, "reason": "MISSING"} for a in arns if a not in revisions]
        return ActionResult({"serviceRevisions": [revisions[a] for a in arns if a in revisions],
                             "failures": missing})

    er.EC2ContainerServiceResponse.list_service_deployments = list_service_deployments  # type: ignore[attr-defined]
    er.EC2ContainerServiceResponse.describe_service_revisions = describe_service_revisions  # type: ignore[attr-defined]



def _after_import(hooks: dict[str, Any]) -> None:
    """Run ``hooks[module]()`` right after ``module`` is imported: moto imports a service's code on
    its first request, and importing every patched service up front made the server start too
    slowly for its fixture on a loaded machine."""
    import importlib.abc
    import importlib.machinery

    class Loader(importlib.abc.Loader):
        def __init__(self, inner: Any, hook: Any) -> None:
            self.inner, self.hook = inner, hook

        def create_module(self, spec: Any) -> Any:
            return self.inner.create_module(spec)

        def exec_module(self, module: Any) -> None:
            self.inner.exec_module(module)
            self.hook()

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name not in hooks:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is not None and spec.loader is not None:
                spec.loader = Loader(spec.loader, hooks.pop(name))
            return spec

    sys.meta_path.insert(0, Finder())


def _lambda_signature_unchecked() -> None:
    """moto's server recomputes the SigV4 signature of Lambda's REST requests differently from
    botocore (SignatureDoesNotMatch for a correctly signed GetFunction), so an IAM-enforcing moto
    cannot be called for Lambda at all.  With OPSCTL_MOTO_LAMBDA_SIGNATURE=unchecked, the signature
    of Lambda requests only is not checked; the access key still names the user, and the user's
    policies are still evaluated for every request (tests/export/test_permissions_aws.py)."""
    from moto.iam.access_control import IAMRequestBase

    check = IAMRequestBase.check_signature

    def check_signature(self: Any) -> None:
        if self._service != "lambda":
            check(self)

    IAMRequestBase.check_signature = check_signature  # type: ignore[method-assign]


def _cheap_dispatch() -> None:
    """moto finds the service of every request by trying its ~400 URL patterns in turn (and listing
    its modules on disk) under one lock; the answer for a host never changes: remember it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    find = DomainDispatcherApplication.get_backend_for_host
    known: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in known:
            known[host] = find(self, host)
        return known[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


def serve(port: int) -> None:
    """Entry point of the moto server process used by the fixtures and the bench."""
    speed_up_moto_sqs()
    cheap_sqs_calls()
    _after_import({"moto.awslambda.models": _keep_alias_qualifiers_of_triggers,
                   "moto.ecs.responses": _ecs_deployment_history})
    if os.environ.get("OPSCTL_MOTO_LAMBDA_SIGNATURE") == "unchecked":
        _lambda_signature_unchecked()
    _cheap_dispatch()
    _run_server(port)


def _run_server(port: int) -> None:
    """moto's WSGI application on cheroot (a thread pool, keep-alive connections) instead of
    ``moto_server``'s werkzeug development server, which starts a thread and closes the connection
    for every request (the client then opens a new one) and logs every request: per SQS call that
    was ~1.5 ms of server CPU and ~0.5 ms of client CPU more, measured under the bench
    (bench/sqs_redrive_throughput.py).  The application (routing, moto's responses) is moto's own."""
    import signal

    from cheroot import wsgi
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    os.environ.setdefault("MOTO_PORT", str(port))  # what moto_server sets (URLs it returns)
    moto_app = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        # an exception outside moto's responses (a region that does not exist) is the HTML 500 page
        # werkzeug's server answers with, as before (the tests' "not an AWS answer" fault)
        try:
            return moto_app(environ, start_response)
        except Exception:  # noqa: BLE001 - logged, answered like werkzeug's server does
            import traceback

            from werkzeug.exceptions import InternalServerError

            traceback.print_exc()
            return InternalServerError()(environ, start_response)

    server = wsgi.Server(("127.0.0.1", port), app, numthreads=32, request_queue_size=64)
    server.keep_alive_conn_limit = None  # type: ignore[assignment]  # the clients' pools (up to 32 connections) stay open

    def stop(*_: Any) -> None:  # nothing to save: moto's state dies with the process, at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.safe_start()
