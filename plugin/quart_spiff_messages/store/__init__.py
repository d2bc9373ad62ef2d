"""The store: every SQL statement lives here. One message = one transaction (:meth:`Store.run`)."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import and_, delete, func, inspect, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from ..correlation import KeyValue
from . import db
from . import statements as sql
from .models import (
    MESSAGE_STATUSES,
    CatalogGeneration,
    MessageInstance,
    MessageKey,
    ProcessInstance,
    ProcessSpec,
    Subscription,
)
from .sqlite import SqliteStore

__all__ = ["MESSAGE_STATUSES", "Busy", "MessageFilter", "MessageInstance", "Page", "ProcessInstance", "Store",
           "Subscription", "Tx"]

Clock = Callable[[], float]
T = TypeVar("T")
RETRY_STATES = {"40P01", "40001"}  # deadlock detected, serialization failure: run the transaction again
BUSY_STATES = {"55P03"}  # lock_not_available: lock_timeout ran out
ATTEMPTS = 4


class Busy(Exception):
    """A lock stayed taken longer than the lock timeout (a busy instance): the caller may retry later."""


def sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _sqlite_busy(exc: DBAPIError) -> bool:
    return "database is locked" in str(exc.orig) or "database is busy" in str(exc.orig)


FINISHED = ("completed", "cancelled", "not_accepted", "failed")


def group_path(group: str) -> str:
    return f"/{group}/" if group else "/"


def ancestor_scopes(group: str) -> list[str]:
    """Scopes that cover ``group``: "", "a", "a/b" for group "a/b"."""
    parts = group.split("/") if group else []
    return [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class WaitRow:
    """What the store needs to index one wait (built by the router from the engine's waits)."""

    task_id: str
    element_id: str
    message_name: str
    key: KeyValue | None  # None: accepts any message of that name


@dataclass(frozen=True)
class MessageFilter:
    name: str | None = None
    statuses: Sequence[str] | None = None
    message_types: Sequence[str] | None = None
    process_instance_id: int | None = None
    created_after: float | None = None
    created_before: float | None = None


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.per_page) if self.per_page else 0


class Store:
    """Runs the router's work in transactions.

    The router's work is plain (synchronous) code on a SQLAlchemy ``Session``. On PostgreSQL it runs on the event
    loop through the asyncio engine (asyncpg; ``AsyncSession.run_sync``). On SQLite a whole transaction runs in one
    writer thread of its own with the standard ``sqlite3`` driver: a statement there costs microseconds, where
    a hop to aiosqlite's thread costs about 100 µs and SQLAlchemy's asyncio bridge 200 µs more, per statement.
    """

    def __init__(self, url: str, clock: Clock, lock_timeout_seconds: float = 5.0) -> None:
        self.url = db.normalize_url(url)
        self.clock = clock
        self.dialect = make_url(self.url).get_backend_name()
        self._pg: async_sessionmaker[AsyncSession] | None = None
        self._sqlite: SqliteStore | None = None
        if self.dialect == "sqlite":
            self._sqlite = SqliteStore(self.url, lock_timeout_seconds)
        else:
            self.engine: AsyncEngine = db.create_engine(self.url, lock_timeout_seconds=lock_timeout_seconds)
            self._pg = async_sessionmaker(self.engine, expire_on_commit=False)

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the Alembic migrations (workers starting together take turns)."""
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.upgrade, revision)
        else:
            await db.upgrade(self.engine, revision)

    async def dispose(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        else:
            await self.engine.dispose()

    async def _once(self, work: Callable[[Tx], T], write: bool) -> T:
        if self._sqlite is not None:
            sqlite = self._sqlite
            if write:
                return await asyncio.get_running_loop().run_in_executor(
                    sqlite.writer, lambda: sqlite.write(lambda session: work(Tx(session, self))))
            return await asyncio.to_thread(sqlite.read, lambda session: work(Tx(session, self)))
        assert self._pg is not None
        async with self._pg() as session, session.begin():
            return await session.run_sync(lambda sync_session: work(Tx(sync_session, self)))

    async def run(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in one writing transaction: all of it is committed, or nothing.

        Again after a deadlock or serialization failure; :class:`Busy` when a lock stays taken too long.
        """
        for attempt in range(ATTEMPTS):
            try:
                return await self._once(work, write=True)
            except DBAPIError as exc:
                state = sqlstate(exc)
                if state in RETRY_STATES and attempt < ATTEMPTS - 1:
                    await asyncio.sleep(random.uniform(0.002, 0.02) * (attempt + 1))
                    continue
                if state in BUSY_STATES or state in RETRY_STATES or _sqlite_busy(exc):
                    raise Busy(str(exc.orig)) from exc
                raise
        raise AssertionError("unreachable")

    async def read(self, work: Callable[[Tx], T]) -> T:
        """Run ``work`` in a reading transaction (on SQLite it never waits for writers)."""
        return await self._once(work, write=False)

    async def missing_specs(self, versions: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        def have(tx: Tx) -> set[tuple[str, str]]:
            rows = tx.session.execute(select(ProcessSpec.process_key, ProcessSpec.spec_version))
            return {(k, v) for k, v in rows}

        return set(versions) - await self.read(have)

    async def save_specs(self, specs: Iterable[tuple[str, str, str]]) -> None:
        """Store spec versions once; workers starting together may race, the first insert wins."""
        rows = [{"process_key": k, "spec_version": v, "spec": s, "created_at": self.clock()} for k, v, s in specs]
        if not rows:
            return
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        await self.run(lambda tx: tx.session.execute(insert(ProcessSpec).on_conflict_do_nothing(), rows))


class Tx:
    """Queries inside one transaction."""

    def __init__(self, session: Session, store: Store) -> None:
        self.session = session
        self.store = store
        self.now = store.clock()

    # -- locks ----------------------------------------------------------------------------------------------------
    def lock_keys(self, exclusive: Iterable[str], shared: Iterable[str] = ()) -> None:
        """Transaction-scoped advisory locks (PostgreSQL; SQLite's single writer already serializes).

        A message and a receiver that come at the same moment lock the same correlation key, so one of them
        always sees the other: the message finds the new wait, or the wait finds the buffered message.
        """
        if self.store.dialect != "postgresql":
            return
        wanted = sorted({(k, True) for k in exclusive} | {(k, False) for k in shared} - {(k, False) for k in exclusive})
        for key, excl in wanted:
            fn = "pg_advisory_xact_lock" if excl else "pg_advisory_xact_lock_shared"
            self.session.execute(text(f"SELECT {fn}(hashtextextended(:k, 0))"), {"k": key})

    # -- specs --------------------------------------------------------------------------------------------------
    def spec(self, process_key: str, version: str) -> str | None:
        row = self.session.get(ProcessSpec, (process_key, version))
        return row.spec if row else None

    # -- process instances --------------------------------------------------------------------------------------
    @property
    def conn(self) -> Connection:
        """The transaction's connection, for the statements of :mod:`.statements`."""
        return self.session.connection()

    def add_instance(self, *, process_key: str, process_id: str, group: str, spec_version: str) -> ProcessInstance:
        """A new instance row, written now (not tracked by the session: :meth:`save_instance` writes it)."""
        values: dict[str, Any] = {
            "process_key": process_key, "process_id": process_id, "process_group": group,
            "spec_version": spec_version, "status": "waiting", "state": "{}", "correlations": {}, "error": None,
            "created_at": self.now, "updated_at": self.now}
        row = ProcessInstance(**values)
        row.id = self.conn.execute(sql.INSERT_INSTANCE, values).scalar_one()
        return row

    def lock_instance(self, instance_id: int) -> ProcessInstance | None:
        """The instance row, locked until commit (PostgreSQL; SQLite's writer lock already covers it).

        Not tracked by the session: :meth:`save_instance` writes it.
        """
        stmt = sql.LOCK_INSTANCE if self.store.dialect == "postgresql" else sql.SELECT_INSTANCE
        found = self.conn.execute(stmt, {"id": instance_id}).mappings().first()
        return ProcessInstance(**found) if found is not None else None

    def instance(self, instance_id: int) -> ProcessInstance | None:
        return self.session.get(ProcessInstance, instance_id)

    def save_instance(self, row: ProcessInstance, *, state: str, status: str, correlations: dict[str, Any],
                      error: dict[str, Any] | None) -> None:
        """Write the instance's new state (a row from :meth:`add_instance` or :meth:`lock_instance`)."""
        row.state, row.status, row.correlations, row.error, row.updated_at = \
            state, status, correlations, error, self.now
        self.conn.execute(sql.SAVE_INSTANCE, {"_id": row.id, "state": state, "status": status,
                                              "correlations": correlations, "error": error,
                                              "updated_at": self.now})

    def list_instances(self, *, status: str | None, process_key: str | None, page: int, per_page: int) -> Page:
        cond = []
        if status:
            cond.append(ProcessInstance.status == status)
        if process_key:
            cond.append(ProcessInstance.process_key == process_key)
        return self._page(ProcessInstance, cond, [ProcessInstance.id.desc()], page, per_page)

    # -- subscriptions ------------------------------------------------------------------------------------------
    def sync_subscriptions(self, instance_id: int, group: str, waits: Sequence[WaitRow]) -> list[WaitRow]:
        """Make the index say exactly ``waits``; unchanged waits keep their row (their place in line).

        Two statements, no read: delete what is no longer wanted, insert the rest skipping rows that exist
        (unique index), and learn from ``RETURNING`` which waits are new.
        """
        wanted = {(w.task_id, w.message_name, w.key.key if w.key else "", w.key.digest if w.key else ""): w
                  for w in waits}
        if wanted:
            self.conn.execute(sql.DELETE_OTHER_WAITS, {"instance_id": instance_id, "keep": list(wanted)})
        else:
            self.conn.execute(sql.DELETE_WAITS, {"instance_id": instance_id})
            return []
        rows = [{"process_instance_id": instance_id, "message_name": w.message_name, "group_path": group_path(group),
                 "key_name": k[2], "values_digest": k[3], "values_json": w.key.canonical if w.key else "",
                 "task_id": w.task_id, "element_id": w.element_id, "created_at": self.now}
                for k, w in wanted.items()]
        added = self.conn.execute(sql.insert_waits(self.store.dialect), rows).all()
        return [wanted[(t, m, k, d)] for t, m, k, d in added]

    def find_subscriptions(self, message_name: str, scope: str, keys: Sequence[tuple[str, str]],
                           limit: int = 8) -> list[int]:
        """Instances waiting for a message: exact key matches first, then accept-any waits, oldest first.

        One index seek per key (a branch of a UNION ALL, each already in id order), so the cost does not grow with
        the number of instances waiting for the same message name. Returns process instance ids.
        """
        params: dict[str, Any] = {"name": message_name, "limit": limit}
        for i, (key, dig) in enumerate([*keys, ("", "")]):
            params[f"k{i}"], params[f"d{i}"] = key, dig
        if scope:
            escaped = group_path(scope).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["group"] = escaped + "%"
        stmt = sql.subscription_lookup(len(keys), bool(scope))
        return list(dict.fromkeys(self.conn.execute(stmt, params).scalars()))

    # -- message instances --------------------------------------------------------------------------------------
    def add_message(self, *, name: str, scope: str, message_type: str, status: str, payload: Any,
                    correlation_keys: dict[str, Any] | None = None, process_instance_id: int | None = None,
                    counterpart_id: int | None = None, message_instance_uuid: str | None = None,
                    failure_cause: str | None = None, expires_at: float | None = None) -> MessageInstance:
        row = self.new_message(
            name=name, scope=scope, message_type=message_type, status=status, payload=payload,
            correlation_keys=correlation_keys, process_instance_id=process_instance_id,
            counterpart_id=counterpart_id, message_instance_uuid=message_instance_uuid,
            failure_cause=failure_cause, expires_at=expires_at)
        self.persist(row)
        return row

    def new_message(self, **fields: Any) -> MessageInstance:
        """A message row not written yet: the router fills in its outcome, then :meth:`persist` writes it once."""
        return MessageInstance(**fields, created_at=self.now, updated_at=self.now)

    def persist(self, row: MessageInstance) -> None:
        """Write a new row now (its id is needed); :meth:`set_message` writes its later changes at once."""
        if row.id is None:
            values = {c: getattr(row, c) for c in sql.MESSAGE_COLUMNS}
            row.id = self.conn.execute(sql.INSERT_MESSAGE, values).scalar_one()

    def set_message(self, row: MessageInstance, **changes: Any) -> None:
        """Change a message row: one the session tracks (read through it) at commit, one :meth:`persist` wrote
        (untracked) now, one not written yet when it is."""
        changes["updated_at"] = self.now
        for k, v in changes.items():
            setattr(row, k, v)
        if row.id is not None and inspect(row).transient:
            self.conn.execute(sql.update_message(tuple(sorted(changes))), {**changes, "_id": row.id})

    def message(self, message_id: int) -> MessageInstance | None:
        return self.session.get(MessageInstance, message_id)

    def unrouted_thrown_messages(self, limit: int = 10_000) -> list[int]:
        """Messages processes threw that were never routed (no correlation keys indexed yet)."""
        indexed = select(MessageKey.id).where(MessageKey.message_instance_id == MessageInstance.id).exists()
        stmt = (select(MessageInstance.id)
                .where(MessageInstance.status == "ready", MessageInstance.message_type == "send",
                       MessageInstance.process_instance_id.is_not(None), ~indexed)
                .order_by(MessageInstance.id).limit(limit))
        return list((self.session.execute(stmt)).scalars())

    def ready_messages_named(self, names: Sequence[str], limit: int = 10_000) -> list[tuple[int, str, str]]:
        """(id, name, scope) of live ready messages with one of ``names``, oldest first."""
        stmt = (select(MessageInstance.id, MessageInstance.name, MessageInstance.scope)
                .where(MessageInstance.status == "ready", MessageInstance.name.in_(list(names)),
                       or_(MessageInstance.expires_at.is_(None), MessageInstance.expires_at > self.now))
                .order_by(MessageInstance.id).limit(limit))
        return [(int(i), str(n), str(g)) for i, n, g in self.session.execute(stmt)]

    def message_by_uuid(self, key: str) -> MessageInstance | None:
        stmt = select(MessageInstance).where(MessageInstance.message_instance_uuid == key)
        return (self.session.execute(stmt)).scalar_one_or_none()

    def expire_ready_messages(self, batch: int) -> int:
        """Mark up to ``batch`` expired ready messages ``cancelled`` (``failure_cause`` "expired")."""
        due = (select(MessageInstance.id)
               .where(MessageInstance.status == "ready", MessageInstance.expires_at <= self.now)
               .order_by(MessageInstance.expires_at).limit(batch))
        if self.store.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list((self.session.execute(due)).scalars())
        if not ids:
            return 0
        self.session.execute(
            update(MessageInstance).where(MessageInstance.id.in_(ids), MessageInstance.status == "ready")
            .values(status="cancelled", failure_cause="expired", updated_at=self.now))
        self.session.execute(delete(MessageKey).where(MessageKey.message_instance_id.in_(ids)))
        return len(ids)

    def purge_finished_messages(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` finished messages last changed before ``before``."""
        old = (select(MessageInstance.id)
               .where(MessageInstance.status.in_(FINISHED), MessageInstance.updated_at < before)
               .order_by(MessageInstance.updated_at).limit(batch))
        if self.store.dialect == "postgresql":
            old = old.with_for_update(skip_locked=True)
        ids = list((self.session.execute(old)).scalars())
        if ids:
            self.session.execute(delete(MessageKey).where(MessageKey.message_instance_id.in_(ids)))
            self.session.execute(delete(MessageInstance).where(MessageInstance.id.in_(ids)))
        return len(ids)

    def claim_message(self, message_id: int) -> MessageInstance | None:
        """Take a ``ready`` message for routing (compare-and-set), or None if someone else has it."""
        result = self.session.execute(
            update(MessageInstance)
            .where(MessageInstance.id == message_id, MessageInstance.status == "ready")
            .values(status="running", updated_at=self.now)
            .returning(MessageInstance.id))
        if result.scalar_one_or_none() is None:
            return None
        return self.session.get(MessageInstance, message_id, populate_existing=True)

    def drop_message_keys(self, message_id: int) -> None:
        self.conn.execute(delete(MessageKey).where(MessageKey.message_instance_id == message_id))

    def index_ready_message(self, row: MessageInstance, keys: Iterable[KeyValue]) -> None:
        """Record the keys of a message left ``ready`` so a receiver that comes to wait later finds it."""
        rows = [{"message_instance_id": row.id, "message_name": row.name, "key_name": key, "values_digest": digest}
                for key, digest in sorted({(kv.key, kv.digest) for kv in keys})]
        if rows:
            self.conn.execute(sql.INSERT_MESSAGE_KEY, rows)

    def ready_messages_for(self, group: str, waits: Sequence[WaitRow], limit: int = 8) -> list[MessageInstance]:
        """Ready messages an instance in ``group`` that now waits for ``waits`` could take; exact first, FIFO."""
        live = and_(MessageInstance.status == "ready",
                    MessageInstance.scope.in_(ancestor_scopes(group)),
                    or_(MessageInstance.expires_at.is_(None), MessageInstance.expires_at > self.now))
        found: dict[int, MessageInstance] = {}
        exact = sorted({(w.message_name, w.key.key, w.key.digest) for w in waits if w.key is not None})
        keyed: list[MessageInstance] = []
        for name, key, dig in exact:  # one index seek per key
            stmt = (select(MessageInstance).join(MessageKey, MessageKey.message_instance_id == MessageInstance.id)
                    .where(MessageKey.message_name == name, MessageKey.key_name == key,
                           MessageKey.values_digest == dig, live)
                    .order_by(MessageKey.id).limit(limit))
            keyed += self.session.execute(stmt).scalars()
        for m in sorted(keyed, key=lambda m: m.id):
            found.setdefault(m.id, m)
        anyname = sorted({w.message_name for w in waits if w.key is None})
        if anyname:
            stmt = (select(MessageInstance).where(MessageInstance.name.in_(anyname), live)
                    .order_by(MessageInstance.id).limit(limit))
            for m in self.session.execute(stmt).scalars():
                found.setdefault(m.id, m)
        return list(found.values())

    def catalog_generation(self) -> int:
        """How many reloads have been asked for (0 before the first)."""
        row = self.session.get(CatalogGeneration, 1)
        return row.generation if row is not None else 0

    def bump_catalog_generation(self) -> int:
        """Ask every worker to reload its BPMN folder; returns the new generation."""
        insert = pg_insert if self.store.dialect == "postgresql" else sqlite_insert
        stmt = insert(CatalogGeneration).values(id=1, generation=1, requested_at=self.now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[CatalogGeneration.id],
            set_={"generation": CatalogGeneration.generation + 1, "requested_at": self.now})
        result = self.session.execute(stmt.returning(CatalogGeneration.generation))
        return int(result.scalar_one())

    def gauges(self) -> tuple[int, int]:
        """(buffered messages, waiting catch points) for the metrics."""
        buffered = self.session.execute(
            select(func.count()).select_from(MessageInstance).where(MessageInstance.status == "ready")).scalar_one()
        waits = select(Subscription.process_instance_id, Subscription.task_id).distinct().subquery()
        waiting = self.session.execute(select(func.count()).select_from(waits)).scalar_one()
        return int(buffered), int(waiting)

    def list_messages(self, flt: MessageFilter, page: int, per_page: int) -> Page:
        cond: list[Any] = []
        if flt.name:
            cond.append(MessageInstance.name == flt.name)
        if flt.statuses:
            cond.append(MessageInstance.status.in_(list(flt.statuses)))
        if flt.message_types:
            cond.append(MessageInstance.message_type.in_(list(flt.message_types)))
        if flt.process_instance_id is not None:
            cond.append(MessageInstance.process_instance_id == flt.process_instance_id)
        if flt.created_after is not None:
            cond.append(MessageInstance.created_at >= flt.created_after)
        if flt.created_before is not None:
            cond.append(MessageInstance.created_at <= flt.created_before)
        order = [MessageInstance.created_at.desc(), MessageInstance.id.desc()]
        return self._page(MessageInstance, cond, order, page, per_page)

    def _page(self, model: Any, cond: list[Any], order: list[Any], page: int, per_page: int) -> Page:
        total = (self.session.execute(select(func.count()).select_from(model).where(*cond))).scalar_one()
        rows = self.session.execute(
            select(model).where(*cond).order_by(*order).offset((page - 1) * per_page).limit(per_page))
        return Page(list(rows.scalars()), int(total), page, per_page)
