"""The hot path's statements, built once with bound parameters.

Measured on the writer thread (``python bench/phases.py``): SQLAlchemy building and compiling a statement, or the
ORM's unit of work flushing one object, costs 150 to 400 µs; running a statement compiled once costs tens of µs.
So the rows a message writes (its own, the receiving instance's, the instance's waits) are written with these
statements, not through the session. Rows written this way are not tracked by the session: the :class:`Tx`
methods that write them also update them.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import (
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import Select

from .models import (
    ActiveKey,
    CatalogGeneration,
    Event,
    MessageInstance,
    MessageKey,
    ProcessInstance,
    ProcessSpec,
    QueuedMessage,
    ServiceCall,
    Subscription,
    Timer,
    TimerStart,
)

MESSAGES: Table = MessageInstance.__table__  # type: ignore[assignment]
INSTANCES: Table = ProcessInstance.__table__  # type: ignore[assignment]
SUBSCRIPTIONS: Table = Subscription.__table__  # type: ignore[assignment]
MESSAGE_KEYS: Table = MessageKey.__table__  # type: ignore[assignment]
SPECS: Table = ProcessSpec.__table__  # type: ignore[assignment]
GENERATION: Table = CatalogGeneration.__table__  # type: ignore[assignment]
EVENTS: Table = Event.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
TIMER_STARTS: Table = TimerStart.__table__  # type: ignore[assignment]
SERVICE_CALLS: Table = ServiceCall.__table__  # type: ignore[assignment]
ACTIVE_KEYS: Table = ActiveKey.__table__  # type: ignore[assignment]
QUEUE: Table = QueuedMessage.__table__  # type: ignore[assignment]

MESSAGE_COLUMNS = tuple(c.key for c in MESSAGES.columns if c.key != "id")

INSERT_MESSAGE = insert(MESSAGES).returning(MESSAGES.c.id)
INSERT_INSTANCE = insert(INSTANCES).returning(INSTANCES.c.id)
INSERT_MESSAGE_KEY = insert(MESSAGE_KEYS)
INSERT_EVENT = insert(EVENTS)
# PostgreSQL: the writing transaction's id (xid8, as bigint) goes into the row with the insert itself
CURRENT_XACT: ColumnClause[Any] = literal_column("pg_current_xact_id()::text::bigint")
INSERT_EVENT_PG = insert(EVENTS).values(xact=CURRENT_XACT)
# what a reader may see of the feed: rows of transactions older than every one still in flight
OLDEST_XACT_IN_FLIGHT: ColumnClause[Any] = literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
SELECT_INSTANCE = select(INSTANCES).where(INSTANCES.c.id == bindparam("id"))
SELECT_MESSAGE = select(MESSAGES).where(MESSAGES.c.id == bindparam("id"))
SELECT_SPEC = select(SPECS.c.spec).where(SPECS.c.process_key == bindparam("key"),
                                         SPECS.c.spec_version == bindparam("version"))
CLAIM_MESSAGE = (update(MESSAGES).where(MESSAGES.c.id == bindparam("_id"), MESSAGES.c.status == "ready")
                 .values(status="running", updated_at=bindparam("now")).returning(*MESSAGES.columns))
DELETE_MESSAGE_KEYS = delete(MESSAGE_KEYS).where(MESSAGE_KEYS.c.message_instance_id == bindparam("id"))
LOCK_INSTANCE = SELECT_INSTANCE.with_for_update()
# the database's time, in seconds since the epoch, read after the locks of the statement that carries it
DATABASE_NOW_SQL = "extract(epoch from clock_timestamp())::float8"
DATABASE_NOW: Select[Any] = select(literal_column(DATABASE_NOW_SQL))
LOCK_INSTANCE_AT = (select(INSTANCES, literal_column(DATABASE_NOW_SQL).label("db_now"))
                    .where(INSTANCES.c.id == bindparam("id")).with_for_update(of=INSTANCES))
SAVE_INSTANCE = (update(INSTANCES).where(INSTANCES.c.id == bindparam("_id"))
                 .values(state=bindparam("state"), status=bindparam("status"),
                         correlations=bindparam("correlations"), error=bindparam("error"),
                         updated_at=bindparam("updated_at")))
# what a deleted wait was (a wait that ends becomes a receive row with the keys it expected, and the wait's id)
_ENDED = (SUBSCRIPTIONS.c.task_id, SUBSCRIPTIONS.c.message_name, SUBSCRIPTIONS.c.key_name, SUBSCRIPTIONS.c.values_json,
          SUBSCRIPTIONS.c.id)
DELETE_WAITS = (delete(SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.process_instance_id == bindparam("instance_id"))
                .returning(*_ENDED))
DELETE_OTHER_WAITS = (delete(SUBSCRIPTIONS).where(
    SUBSCRIPTIONS.c.process_instance_id == bindparam("instance_id"),
    tuple_(SUBSCRIPTIONS.c.task_id, SUBSCRIPTIONS.c.message_name, SUBSCRIPTIONS.c.key_name,
           SUBSCRIPTIONS.c.values_digest).not_in(bindparam("keep", expanding=True))).returning(*_ENDED))

# The receive row of a wait that a message ends keeps the id the wait is listed with (its first index row's), read
# by the insert itself; a wait no longer indexed gets a fresh id (SQLite: the store's next one, ``fresh_id``;
# PostgreSQL: the sequence messages and waits share).
ID_SEQUENCE = "spiff_message_instance_id_seq"
_ENDING_WAIT_ID = select(func.min(SUBSCRIPTIONS.c.id)).where(
    SUBSCRIPTIONS.c.process_instance_id == bindparam("wait_instance"),
    SUBSCRIPTIONS.c.task_id == bindparam("wait_task"), SUBSCRIPTIONS.c.message_name == bindparam("wait_message"))
INSERT_RECEIVE = (insert(MESSAGES).values(id=func.coalesce(_ENDING_WAIT_ID.scalar_subquery(), bindparam("fresh_id")))
                  .returning(MESSAGES.c.id))
INSERT_RECEIVE_PG = (insert(MESSAGES)
                     .values(id=func.coalesce(_ENDING_WAIT_ID.scalar_subquery(), func.nextval(ID_SEQUENCE)))
                     .returning(MESSAGES.c.id))
LAST_ID = select(func.max(func.coalesce(select(func.max(MESSAGES.c.id)).scalar_subquery(), 0),
                          func.coalesce(select(func.max(SUBSCRIPTIONS.c.id)).scalar_subquery(), 0)))
# SQLite: the first message a transaction writes reads the last id of the shared space itself (no round trip)
INSERT_MESSAGE_AFTER_LAST = insert(MESSAGES).values(id=LAST_ID.scalar_subquery() + 1).returning(MESSAGES.c.id)

DELETE_TIMERS = delete(TIMERS).where(TIMERS.c.process_instance_id == bindparam("instance_id"))
DELETE_OTHER_TIMERS = DELETE_TIMERS.where(
    tuple_(TIMERS.c.task_id, TIMERS.c.element_id).not_in(bindparam("keep", expanding=True)))
NEXT_DUE_TIMER = (select(TIMERS.c.process_instance_id).where(TIMERS.c.due_at <= bindparam("now"))
                  .order_by(TIMERS.c.due_at, TIMERS.c.id).limit(1))
# PostgreSQL: lock the instance, as a delivery does first, skipping instances others hold (a delivery to one fires
# its due timers itself); locking the timer row first would take the two locks in the other order.
CLAIM_DUE_TIMER = (select(TIMERS.c.process_instance_id)
                   .join(INSTANCES, INSTANCES.c.id == TIMERS.c.process_instance_id)
                   .where(TIMERS.c.due_at <= bindparam("now"))
                   .order_by(TIMERS.c.due_at, TIMERS.c.id).limit(1)
                   .with_for_update(of=INSTANCES, skip_locked=True))
NEXT_DUE_TIMER_START = (select(TIMER_STARTS).where(TIMER_STARTS.c.next_due <= bindparam("now"))
                        .order_by(TIMER_STARTS.c.next_due).limit(1))


def in_group(group_path: Any) -> Any:
    """SQL for "this stored group path is the bound ``group`` path or below it" (:func:`..names.in_scope`).

    A prefix comparison, not ``LIKE``: SQLite's ``LIKE`` ignores case, so ``Orders`` would cover ``orders`` there.
    """
    group: Any = bindparam("group")
    return func.substr(group_path, 1, func.length(group)) == group


@functools.lru_cache(maxsize=64)
def subscription_lookup(n_keys: int, scoped: bool) -> Any:
    """Tasks waiting for a message, for ``n_keys`` correlation keys: one index seek per key, exact keys first."""
    branches = []
    for i in range(n_keys + 1):
        branch = (select(SUBSCRIPTIONS.c.process_instance_id, SUBSCRIPTIONS.c.task_id, SUBSCRIPTIONS.c.id,
                         literal(0 if i < n_keys else 1).label("rank"))
                  .where(SUBSCRIPTIONS.c.message_name == bindparam("name"),
                         SUBSCRIPTIONS.c.key_name == bindparam(f"k{i}"),
                         SUBSCRIPTIONS.c.values_digest == bindparam(f"d{i}")))
        if scoped:
            branch = branch.where(in_group(SUBSCRIPTIONS.c.group_path))
        branches.append(select(branch.order_by(SUBSCRIPTIONS.c.id).limit(bindparam("limit")).subquery()))
    found = union_all(*branches).subquery()
    return (select(found.c.process_instance_id, found.c.task_id).order_by(found.c.rank, found.c.id)
            .limit(bindparam("limit")))


@functools.lru_cache(maxsize=64)
def update_message(columns: tuple[str, ...]) -> Any:
    """UPDATE of these columns of one message row (one statement per set of columns)."""
    return (update(MESSAGES).where(MESSAGES.c.id == bindparam("_id"))
            .values({c: bindparam(c) for c in columns}))


@functools.lru_cache(maxsize=4)
def insert_waits(dialect: str) -> Any:
    """Insert waits, skipping those already indexed (unique index), returning the new ones."""
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return (insert_(SUBSCRIPTIONS).on_conflict_do_nothing()
            .returning(SUBSCRIPTIONS.c.task_id, SUBSCRIPTIONS.c.message_name, SUBSCRIPTIONS.c.key_name,
                       SUBSCRIPTIONS.c.values_digest))


@functools.lru_cache(maxsize=4)
def upsert_timers(dialect: str) -> Any:
    """Insert timers, or move an indexed one to its new due time (a cycle's next)."""
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert_(TIMERS)
    return stmt.on_conflict_do_update(
        index_elements=[TIMERS.c.process_instance_id, TIMERS.c.task_id, TIMERS.c.element_id],
        set_={"due_at": stmt.excluded.due_at, "timer_type": stmt.excluded.timer_type})


@functools.lru_cache(maxsize=4)
def insert_service_calls(dialect: str) -> Any:
    """Insert service calls, keeping those already there (their attempts and lease), returning the new ones."""
    insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert_(SERVICE_CALLS).on_conflict_do_nothing().returning(SERVICE_CALLS.c.id)


# the refusal path (refusals.py): how many instances wait for a name (counted up to a cap), the latest ended waits
_WAITERS = select(SUBSCRIPTIONS.c.process_instance_id).where(SUBSCRIPTIONS.c.message_name == bindparam("name"))
COUNT_WAITERS = select(func.count()).select_from(_WAITERS.distinct().limit(bindparam("cap")).subquery())
COUNT_WAITERS_IN_GROUP = select(func.count()).select_from(
    _WAITERS.where(in_group(SUBSCRIPTIONS.c.group_path)).distinct().limit(bindparam("cap")).subquery())
# one branch per status, each read in the (status, name, id) index's order: never a sort of every ended wait
_LATEST_ENDED = union_all(*(
    select(select(MESSAGES.c.id, MESSAGES.c.process_instance_id, MESSAGES.c.correlation_keys)
           .where(MESSAGES.c.status == status, MESSAGES.c.name == bindparam("name"),
                  MESSAGES.c.message_type == "receive")
           .order_by(MESSAGES.c.id.desc()).limit(bindparam("limit")).subquery())
    for status in ("completed", "failed", "cancelled"))).subquery()
ENDED_RECEIVES = (select(_LATEST_ENDED.c.process_instance_id, _LATEST_ENDED.c.correlation_keys)
                  .order_by(_LATEST_ENDED.c.id.desc()).limit(bindparam("limit")))


def _queue_heads() -> Any:
    """The oldest queued message of each order key (and every message without one), oldest first: the message rows
    themselves (routing needs them; no read of its own per message)."""
    older = QUEUE.alias("older")
    earlier = (select(older.c.id)
               .where(older.c.order_key == QUEUE.c.order_key, older.c.id < QUEUE.c.id).exists())
    return (select(MESSAGES).join(QUEUE, QUEUE.c.message_instance_id == MESSAGES.c.id).where(~earlier)
            .order_by(QUEUE.c.id).limit(bindparam("limit")))


INSERT_QUEUED = insert(QUEUE)
QUEUE_HEADS = _queue_heads()
# PostgreSQL: heads another transaction is routing are skipped; their successors stay behind them (the locked row
# still exists for the NOT EXISTS until that transaction commits)
CLAIM_QUEUE_HEADS = _queue_heads().with_for_update(of=QUEUE, skip_locked=True)
DELETE_QUEUED = delete(QUEUE).where(QUEUE.c.message_instance_id == bindparam("id"))
