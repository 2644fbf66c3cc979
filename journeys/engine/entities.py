"""Rows of users and accounts as executors see them: staged columns plus custom attributes."""

from __future__ import annotations

from collections.abc import Iterable

import duckdb


class EntityDirectory:
    """Bulk-loaded lookups for the entities whose actions run now (one query per table, not per action)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, entities: Iterable[tuple[str, str]]):
        self.con = con
        wanted = set(entities)
        user_ids = sorted(e for t, e in wanted if t == "user")
        account_ids = sorted(e for t, e in wanted if t == "account")
        self.users = self._rows("staging.stg_users", "user_id", user_ids)
        account_ids = sorted(set(account_ids) | {u["account_id"] for u in self.users.values() if u.get("account_id")})
        self.accounts = self._rows("staging.stg_accounts", "account_id", account_ids)
        self.team: dict[tuple[str, str], list[str]] = {}
        for account_id, role, member in con.execute(
            "select account_id, role, member from staging.stg_account_team where account_id in (select unnest(?)) order by member",
            [account_ids],
        ).fetchall():
            self.team.setdefault((account_id, role), []).append(member)
        self._attach_custom("user", self.users)
        self._attach_custom("account", self.accounts)

    def _rows(self, table: str, key: str, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        cursor = self.con.execute(f"select * from {table} where {key} in (select unnest(?))", [ids])
        names = [d[0] for d in cursor.description]
        return {row[names.index(key)]: dict(zip(names, row)) for row in cursor.fetchall()}

    def _attach_custom(self, entity_type: str, rows: dict[str, dict]) -> None:
        for row in rows.values():
            row["custom"] = {}
        if not rows:
            return
        for entity_id, name, value in self.con.execute(
            "select entity_id, name, value from main.entity_attributes where entity_type = ? and entity_id in (select unnest(?))",
            [entity_type, sorted(rows)],
        ).fetchall():
            rows[entity_id]["custom"][name] = value

    def row(self, entity_type: str, entity_id: str) -> dict | None:
        return (self.users if entity_type == "user" else self.accounts).get(entity_id)

    def account_of(self, entity_type: str, entity_id: str) -> dict | None:
        if entity_type == "account":
            return self.accounts.get(entity_id)
        user = self.users.get(entity_id)
        return self.accounts.get(user["account_id"]) if user else None

    def team_members(self, account_id: str | None, role: str) -> list[str]:
        return list(self.team.get((account_id, role), [])) if account_id else []

    def is_suppressed(self, email: str) -> bool:
        """Suppressions match addresses case-insensitively (loaded once per run)."""
        if not hasattr(self, "_suppressed"):
            rows = self.con.execute("select distinct lower(email) from staging.stg_email_suppressions").fetchall()
            self._suppressed = {r[0] for r in rows}
        return email.lower() in self._suppressed

    def users_of(self, account_id: str) -> list[dict]:
        cursor = self.con.execute("select * from staging.stg_users where account_id = ? order by user_id", [account_id])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
