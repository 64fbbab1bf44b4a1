"""Creating icefloe's tables in a PostgreSQL schema, safely from many places at once.

``CREATE SCHEMA IF NOT EXISTS`` and ``CREATE TABLE IF NOT EXISTS`` are not
safe against themselves: two sessions running one at the same moment can
both find the name free, and the second fails with a unique violation on the
catalogue (``pg_namespace_nspname_index``). That happens on every first start
against a new schema, where one process opens its run store and its hub topic
store at once, and whenever several gateways start together. So every
creation here runs in a transaction that first takes one advisory lock, the
same for all of icefloe's tables: the creations queue instead of racing.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SCHEMA_LOCK", "create_tables"]

#: the advisory lock (an arbitrary constant) every creation of icefloe's
#: schema and tables holds until its transaction ends
SCHEMA_LOCK: Final = 0x1CEF_10E5


async def create_tables(conn: Any, schema: str | None, ddl: str) -> None:
    """Create ``schema`` (unless None) and run ``ddl`` under :data:`SCHEMA_LOCK`.

    ``conn`` is an asyncpg connection outside any transaction; ``schema`` a
    name the caller validated; ``ddl`` idempotent statements (``IF NOT EXISTS``).
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        if schema is not None:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(ddl)
