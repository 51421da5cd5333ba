#!/usr/bin/env python3
"""Vendor the WorkflowTemplate schema the export tests check against (tests/export/data/).

Reads Argo Workflows' full CRD (argoproj.io_workflowtemplates.yaml, from argoproj/argo-workflows
`manifests/base/crds/full/`, Apache-2.0), keeps its `openAPIV3Schema` without the `description`s
(about 2/3 of the text), and writes it as gzipped JSON with its provenance:

    python scripts/vendor-argo-schema.py ../shared/argo/argoproj.io_workflowtemplates.yaml
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent.parent / "tests" / "export" / "data"


def strip(node: Any) -> Any:
    if isinstance(node, dict):
        # a schema annotation, not a property called "description" (a dict)
        return {k: strip(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main(src: str) -> None:
    raw = Path(src).read_bytes()
    crd = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = crd["spec"]["versions"][0]
    schema = strip(version["schema"]["openAPIV3Schema"])
    body = json.dumps(schema, separators=(",", ":"), sort_keys=True).encode()
    OUT.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same input gives the same bytes
    (OUT / "argo-workflowtemplate.schema.json.gz").write_bytes(gzip.compress(body, 9, mtime=0))
    (OUT / "argo-workflowtemplate.schema.provenance.json").write_text(json.dumps({
        "source": "argoproj/argo-workflows manifests/base/crds/full/argoproj.io_workflowtemplates.yaml "
                  "(commit f016ad89eb, main after v4.1.2), Apache License 2.0",
        "crd": crd["metadata"]["name"], "version": version["name"],
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "transformation": "spec.versions[0].schema.openAPIV3Schema, every description annotation "
                          "(a string) removed, "
                          "compact JSON, gzip (scripts/vendor-argo-schema.py)",
    }, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
