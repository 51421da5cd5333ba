"""Running runbooks beyond one terminal: Kubernetes Job/CronJob and Argo WorkflowTemplate manifests,
and the least-privilege permissions (Kubernetes RBAC, IAM, PostgreSQL grants, Redis/Kafka ACLs)
derived from the actions a runbook uses.  Imported only by the commands that export; never at
CLI start-up."""
