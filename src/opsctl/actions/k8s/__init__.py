"""Kubernetes actions: workload and pod state, rollout history, events, logs, HPA, a Service and its
endpoints, the NetworkPolicy path between pods (read-only); scale,
rollout restart, rollout undo, container env patch, pod delete (mutating); wait for a rollout.

All go through ``opsctl.backends.kubernetes`` (official client, imported lazily).  Workloads are
deployments or statefulsets; a rollout is complete only when the controller has observed the latest
generation and updated == ready == current == desired (``kubectl rollout status``).
"""

from opsctl.actions.k8s import mutate, mutate_env, network, read  # noqa: F401 - registers the actions
