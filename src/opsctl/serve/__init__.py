"""`opsctl serve`: the HTTP receiver for Alertmanager and PagerDuty webhooks (the only importer of
Starlette, Uvicorn and prometheus-client; installed with the `serve` extra)."""
