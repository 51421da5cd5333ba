"""`opsctl alert FILE|-` (which runbook each alert maps to; --run diagnoses) and `opsctl serve`
(the webhook receiver; needs the `serve` extra, imported only when the command runs)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from opsctl.cli.run_cmd import Output


def alert(
    payload: Annotated[str, typer.Argument(metavar="FILE|-", help="An Alertmanager (v4) or PagerDuty "
                                           "v3 webhook payload; - reads stdin.")],
    run: Annotated[bool, typer.Option("--run", help="Run the diagnosis of every mapped alert (read-only:"
                                      " diagnose + the recommended option's plan; a resolved alert "
                                      "runs verify).")] = False,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml.")] = None,
    output: Annotated[Output, typer.Option("--output", "-o",
                                           help="text for people, json for tools.")] = Output.text,
) -> int:
    """Show which runbook each alert of a webhook payload maps to, with which parameters (the
    alert's, over the environment's opsctl.yaml params, over the runbook's defaults)."""
    from opsctl import config
    from opsctl.alerts import load_catalogue, payloads, read_payload

    environment = config.load_environment(env)
    catalogue, _ = load_catalogue(environment=environment)
    batch = payloads.parse(read_payload(payload), catalogue.alert_names)
    mappings = [catalogue.map(a) for a in batch.alerts]
    runs: dict[int, list[dict[str, Any]]] = {}
    codes = [2 for m in mappings if m.problem]
    if run:
        codes += _run(catalogue, mappings, environment, runs, quiet=output == Output.json)
    if output == Output.json:
        doc = {"source": batch.source, "group_key": batch.group_key, "truncated": batch.truncated,
               "warnings": batch.warnings,
               "alerts": [{**m.as_dict(), **({"runs": runs[i]} if run else {})}
                          for i, m in enumerate(mappings)]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        _print(batch, mappings, runs)
    return max(codes, default=0)


def _print(batch: Any, mappings: list[Any], runs: dict[int, list[dict[str, Any]]]) -> None:
    for w in batch.warnings:
        typer.echo(f"warning: {w}", err=True)
    if not mappings:
        typer.echo(f"no alerts in this {batch.source} payload")
    for i, m in enumerate(mappings):
        typer.echo(m.alert.describe())
        if m.problem:
            typer.echo(f"  error: {m.problem}")
        for w in m.warnings:
            typer.echo(f"  warning: {w}")
        for match in m.matches:
            params = " ".join(f"{k}={v}" for k, v in match.given.items()) or "(default parameters)"
            params += "".join(f" (connect {k} {v})" for k, v in match.connect.items())
            if match.environment:
                params += " (from the environment: " + " ".join(
                    f"{k}={v}" for k, v in match.environment.items()) + ")"
            typer.echo(f"  -> {match.runbook} {params}   [{match.via}]")
            for w in match.warnings:
                typer.echo(f"     warning: {w}")
        for r in runs.get(i, []):
            typer.echo(f"  {r['phase']} {r['runbook']}: {r['status']} ({r['message']}); "
                       f"run {r['run_id']}")
            for f in r["findings"]:
                typer.echo(f"     {f['severity']}: ({f['step']}) {f['message']}")
            if r.get("command"):
                typer.echo(f"     recommended: {r['recommended']} -> {r['command']}")
            elif r.get("recommendation_note"):
                typer.echo(f"     {r['recommendation_note']}")


def _run(catalogue: Any, mappings: list[Any], environment: Any,
         runs: dict[int, list[dict[str, Any]]], quiet: bool) -> list[int]:
    from opsctl.alerts import message, runner

    codes = []
    for i, m in enumerate(mappings):
        runs[i] = []
        if m.status != "mapped":
            continue
        match = m.matches[0]
        rb = catalogue.runbooks[match.runbook]
        if not quiet:
            typer.echo(f"{'verifying' if m.alert.status == 'resolved' else 'diagnosing'} "
                       f"{m.alert.describe()} with {rb.id} ...", err=True)
        if m.alert.status == "resolved":
            result = runner.verify(rb, m.alert, match, environment)
        else:
            result = runner.diagnose(rb, m.alert, match, environment)
        doc = runner.summary(result)
        if result.recommended:
            doc["command"] = message.apply_command(rb, match.given, result.recommended.name,
                                                   environment.name, result.plan_file)
        runs[i].append(doc)
        codes.append(result.outcome.exit_code)
    return codes


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 9095,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment from opsctl.yaml.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64,
                                             help="Runs at once; the rest wait in the queue.")] = 4,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1,
                                            help="Alerts waiting at most; beyond, 503.")] = 1000,
    max_body: Annotated[int, typer.Option("--max-body", min=1024,
                                          help="Largest request body accepted, in bytes.")] = 1 << 20,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept Alertmanager posts without a "
                                          "bearer token (the default on a loopback address when "
                                          "no token is set).")] = False,
) -> int:
    """Receive Alertmanager (POST /alertmanager) and PagerDuty v3 (POST /pagerduty) webhooks and run
    the bound runbook's diagnosis for each firing alert (never a mutation); findings go to Slack."""
    from opsctl.errors import UsageError

    try:
        from opsctl.serve import main as serve_main
    except ImportError as e:
        raise UsageError(f"opsctl serve needs the 'serve' extra ({e.name} is missing): "
                         "pip install 'opsctl-runbooks[serve]'") from None
    return serve_main.run(host=host, port=port, env=env, concurrency=concurrency,
                          queue_size=queue_size, max_body=max_body, no_auth=no_auth)


def validate_alerts(paths: list[str] | None, directory: str, output: Output) -> int:
    """`opsctl validate --alerts DIR`: replay stored payloads (*.json) through the bindings; exit 2
    when an alert maps to nothing, to two runbooks or to invalid parameters, or a runbook is
    invalid.  Labels a binding reads that the alert lacks are warnings."""
    from pathlib import Path

    from opsctl.alerts import load_catalogue, payloads
    from opsctl.errors import UsageError

    root = Path(directory)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root] if root.is_file() else []
    if not files:
        raise UsageError(f"no alert payloads (*.json) in {directory}")
    catalogue, rb_errors = load_catalogue(paths or None)
    errors = [str(e) for e in rb_errors]
    warnings: list[str] = []
    replayed: list[dict[str, Any]] = []
    count = 0
    for f in files:
        try:
            batch = payloads.parse(f.read_bytes(), catalogue.alert_names)
        except payloads.PayloadError as e:
            errors.append(f"{f}: {e.message}")
            continue
        except OSError as e:
            errors.append(f"{f}: cannot read: {e.strerror}")
            continue
        warnings += [f"{f}: {w}" for w in batch.warnings]
        for i, m in enumerate(catalogue.map(a) for a in batch.alerts):
            count += 1
            where = f"{f}: alerts[{i}]"
            if m.problem:
                errors.append(f"{where}: {m.problem}")
            warnings += [f"{where}: {w}" for w in m.warnings]
            warnings += [f"{where}: {mt.runbook}: {w}" for mt in m.matches for w in mt.warnings]
            replayed.append({"file": str(f), "index": i, **m.as_dict()})
    if output == Output.json:
        typer.echo(json.dumps({"errors": errors, "warnings": warnings, "alerts": replayed}, indent=2))
    else:
        for err in errors:
            typer.echo(err)
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)
        typer.echo(f"{len(files)} payload(s), {count} alert(s) replayed against "
                   f"{len(catalogue.runbooks)} runbook(s): "
                   + (f"{len(errors)} error(s)" if errors else "every alert maps to one runbook"),
                   err=True)
    return 2 if errors else 0
