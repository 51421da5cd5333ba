"""Argo's WorkflowTemplate schema (vendored: data/argo-workflowtemplate.schema.*), checked strictly.

The CRD's schema is structural: the API server silently prunes a field it does not know, so a typo
(`retrystrategy`) would vanish instead of failing.  Here every object that lists its properties is
closed (additionalProperties: false) unless the schema keeps unknown fields, which turns pruning
into an error; `x-kubernetes-int-or-string` accepts both, as the API server does."""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "argo-workflowtemplate.schema.json.gz"


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator() -> Any:
    import jsonschema

    schema = _strict(json.loads(gzip.decompress(DATA.read_bytes())))
    return jsonschema.Draft7Validator(schema)


def errors(doc: dict[str, Any]) -> list[str]:
    """Every place the document breaks the schema, as `path: message`."""
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in _validator().iter_errors(doc))
