#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine: venv + packages, the one-time Kubernetes
# control-plane build (cached in ~/.cache), then pytest.  Test fixtures start their own private
# PostgreSQL, Redis, Kafka-protocol brokers, moto server and kube-apiserver on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
bash scripts/k8s-cluster.sh install
bash scripts/prometheus-install.sh >/dev/null
.venv/bin/ruff check src tests bench scripts
.venv/bin/mypy src/opsctl
# most of the suite waits on real servers, so 4 workers pay off even on 2 cores
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-4}" --dist loadfile "$@"
