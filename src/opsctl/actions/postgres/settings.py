"""Per-role timeout guards (ALTER ROLE ... SET)."""

from __future__ import annotations

import re
from typing import Any

from opsctl.actions import register
from opsctl.actions.base import is_template, type_schema
from opsctl.actions.needs import Pg
from opsctl.actions.postgres.common import DATABASE, PgAction
from opsctl.backends import postgres as pg
from opsctl.errors import ActionError
from opsctl.records import Change, Plan

_ROLE_SETTINGS = ("statement_timeout", "idle_in_transaction_session_timeout", "lock_timeout",
                  "idle_session_timeout")
_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")


@register
class SetRoleSetting(PgAction):
    """ALTER ROLE ... [IN DATABASE ...] SET a timeout guard (statement_timeout,
    idle_in_transaction_session_timeout, lock_timeout, idle_session_timeout); `value: null` resets
    it.  The plan shows the old value; it applies to sessions opened afterwards.

    ```yaml
    - id: guard
      action: postgres.set_role_setting
      with: {role: app, database: app, setting: idle_in_transaction_session_timeout, value: 60s}
    ```
    """

    name = "postgres.set_role_setting"
    permissions = (Pg(roles=("pg_monitor",)),
                   Pg(attributes=("CREATEROLE",), apply=True,
                      note="PostgreSQL 16+: also ADMIN OPTION on the role it alters"))
    read_only = False
    summary = "ALTER ROLE ... SET a timeout guard (plan shows old -> new)"
    schema = type_schema({"role": {"type": "string", "minLength": 1}, "database": DATABASE,
                          "setting": {"type": "string", "enum": list(_ROLE_SETTINGS)},
                          "value": {"type": ["string", "integer", "null"]}},
                         required=["role", "setting", "value"])

    @classmethod
    def validate_args(cls, args: dict[str, Any]) -> list[tuple[str, str]]:
        value = args.get("value")
        if value is None or is_template(value) or _DURATION.match(str(value)):
            return []
        return [("value", f"expected a duration such as 30s, 500ms, 5min or 0 (got {value!r})")]

    def _current(self, conn: Any) -> str | None:
        role, db = self.args["role"], self.args.get("database")
        if not pg.fetch(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
            raise ActionError(f"postgres.set_role_setting: role {role!r} does not exist")
        rows = pg.fetch(conn, "SELECT unnest(setconfig) AS kv FROM pg_db_role_setting s "
                              "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s AND s.setdatabase = "
                              "coalesce((SELECT oid FROM pg_database WHERE datname = %s), 0)", (role, db))
        prefix = self.args["setting"] + "="
        return next((r["kv"][len(prefix):] for r in rows if r["kv"].startswith(prefix)), None)

    def plan(self) -> Plan:
        problems = self.validate_args(self.args)
        if problems:
            raise ActionError(f"{self.name}: {problems[0][1]}")
        new = None if self.args["value"] is None else str(self.args["value"]).replace(" ", "")
        with self.session() as conn:
            old = self._current(conn)
        scope = f"role {self.args['role']}" + (f" in database {self.args['database']}"
                                                if self.args.get("database") else "")
        if old == new:
            return Plan(summary=f"{self.args['setting']} of {scope} is already {new}")
        return Plan(summary=f"set {self.args['setting']} for {scope}",
                    changes=[Change(target=scope, operation="alter role set", before=old, after=new,
                                    detail=f"{self.args['setting']}; applies to new sessions")],
                    data={"before": old, "after": new})

    def apply(self, plan: Plan) -> dict[str, Any]:
        role, db, setting = self.args["role"], self.args.get("database"), self.args["setting"]
        with self.session() as conn:
            if self._current(conn) != plan.data["before"]:
                raise ActionError(f"{self.name}: {setting} of role {role} changed since the plan; re-run")
            after = plan.data["after"]
            pg.alter_role_setting(conn, role, db, setting, after)
        return {"role": role, "setting": setting, "before": plan.data["before"], "after": after}
