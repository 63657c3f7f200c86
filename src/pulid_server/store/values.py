"""Server-wide values every node must share (the webhook signing key), created once by whoever asks first."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from pulid_server.store.database import Database
from pulid_server.store.schema import server_values


class SqlServerValues:
    def __init__(self, db: Database):
        self._db = db

    def server_value(self, name: str, make: Callable[[], str]) -> str:
        with self._db.read() as conn:
            value = conn.execute(select(server_values.c.value).where(server_values.c.name == name)).scalar()
        if value is not None:
            return str(value)
        try:
            with self._db.tx() as conn:
                conn.execute(insert(server_values).values(name=name, value=make()))
        except IntegrityError:
            pass  # another node created it first: read theirs
        return self.server_value(name, make)
