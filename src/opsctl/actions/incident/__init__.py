"""Incident triage (rb-001): a read-only sweep of every backend the environment configures, in
parallel, classified into a proposed severity with the specialised runbooks to run."""

from opsctl.actions.incident import sweep as sweep  # noqa: F401  (registers incident.sweep)
