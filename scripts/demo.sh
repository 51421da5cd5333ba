#!/usr/bin/env bash
# Set up opsctl in .venv and rehearse a real incident on local services: a private PostgreSQL
# whose connection pool an application has exhausted, diagnosed and fixed by runbook rb-006.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
