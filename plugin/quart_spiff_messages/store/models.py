"""Tables. The schema itself is created by the Alembic migrations next to this module, never by ``create_all``.

Names carry a ``spiff_`` prefix so the tables can live in a host application's own database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Double, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MESSAGE_STATUSES = ("ready", "running", "completed", "failed", "cancelled", "not_accepted")
MESSAGE_TYPES = ("send", "receive")
INSTANCE_STATUSES = ("not_started", "waiting", "user_input_required", "complete", "error", "terminated")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class ProcessSpec(Base):
    """Each process spec version once, so an instance resumes on the spec it started with after a BPMN change."""

    __tablename__ = "spiff_process_spec"
    process_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    spec_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    spec: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)


class ProcessInstance(Base):
    __tablename__ = "spiff_process_instance"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_key: Mapped[str] = mapped_column(String(512), index=True)
    process_id: Mapped[str] = mapped_column(String(255))
    process_group: Mapped[str] = mapped_column(String(255))
    spec_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(Text)
    correlations: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class Subscription(Base):
    """One row per (wait, correlation key): the index that makes correlation a lookup instead of a scan.

    ``key_name`` and ``values_digest`` are empty for a wait that accepts any message of its name.
    """

    __tablename__ = "spiff_subscription"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_instance_id: Mapped[int] = mapped_column(
        ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), index=True)
    message_name: Mapped[str] = mapped_column(String(255))
    group_path: Mapped[str] = mapped_column(String(512))  # "/" for the root group, "/a/b/" for group a/b
    key_name: Mapped[str] = mapped_column(String(255))
    values_digest: Mapped[str] = mapped_column(String(40))
    values_json: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str] = mapped_column(String(36))
    element_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_spiff_subscription_lookup", "message_name", "key_name", "values_digest", "id"),
        Index("ux_spiff_subscription_wait", "process_instance_id", "task_id", "message_name", "key_name",
              "values_digest", unique=True),
    )


class Timer(Base):
    """One row per timer an instance waits at, with its due time: what the scheduler claims, oldest due first.

    Written and removed in the instance's own transaction (the core's settle step), so a row exists exactly while
    its task waits.
    """

    __tablename__ = "spiff_timer"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_instance_id: Mapped[int] = mapped_column(
        ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(36))
    element_id: Mapped[str] = mapped_column(String(255))
    timer_type: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[float] = mapped_column(Double, index=True)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ux_spiff_timer_task", "process_instance_id", "task_id", "element_id", unique=True),)


class ServiceCall(Base):
    """One row per service task waiting for its result while a handler of this host can do its work: what the
    workers claim (with a lease) to call the handler. Written and removed with the instance (the core's settle
    step); a failed attempt moves ``next_attempt_at`` on. A claim holds ``lease_until``; a worker that dies lets it
    run out, and another worker calls the handler again (at least once)."""

    __tablename__ = "spiff_service_call"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_instance_id: Mapped[int] = mapped_column(
        ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(String(36))
    element_id: Mapped[str] = mapped_column(String(255))
    operator: Mapped[str] = mapped_column(String(255))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer)  # the number of the next call: 1 for the first
    next_attempt_at: Mapped[float] = mapped_column(Double, index=True)
    lease_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ux_spiff_service_call_task", "process_instance_id", "task_id", unique=True),)


class TimerStart(Base):
    """The schedule of one timer start event: when it next starts an instance and how many starts are left.

    One row per (process, start event) for every worker and host: a start and the row's step to its next due time
    are one transaction, so each due time starts one instance. Kept when the cycles run out (``next_due`` null), so
    a restart does not begin the schedule again; rebuilt when the expression changes.
    """

    __tablename__ = "spiff_timer_start"
    process_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    element_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    expression: Mapped[str] = mapped_column(Text)
    next_due: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)
    cycles_left: Mapped[int] = mapped_column(Integer)  # -1: for ever
    interval_seconds: Mapped[float] = mapped_column(Double)
    started: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Double)


class MessageInstance(Base):
    __tablename__ = "spiff_message_instance"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    scope: Mapped[str] = mapped_column(String(255), default="")  # group prefix it was sent to ("" = every group)
    message_type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    correlation_keys: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    process_instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    counterpart_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message_instance_uuid: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    failure_cause: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Double, nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Double, index=True)
    updated_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_spiff_message_instance_status_name", "status", "name", "id"),
        Index("ix_spiff_message_instance_status_expires", "status", "expires_at"),
    )


class MessageKey(Base):
    """Correlation keys of a message that waits for a receiver (status ``ready``), for matching on wait."""

    __tablename__ = "spiff_message_key"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_instance_id: Mapped[int] = mapped_column(
        ForeignKey("spiff_message_instance.id", ondelete="CASCADE"), index=True)
    message_name: Mapped[str] = mapped_column(String(255))
    key_name: Mapped[str] = mapped_column(String(255))
    values_digest: Mapped[str] = mapped_column(String(40))

    __table_args__ = (Index("ix_spiff_message_key_lookup", "message_name", "key_name", "values_digest"),)


class ActiveKey(Base):
    """A correlation key held by an active instance of a process that starts one instance per correlation key.

    Written with the instance that a Message Start Event made, removed when that instance completes. The unique
    index decides a race of starts with the same key: the second insert finds the first (waiting for it to commit
    on PostgreSQL), and its message goes elsewhere.
    """

    __tablename__ = "spiff_active_key"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_key: Mapped[str] = mapped_column(String(512))
    key_name: Mapped[str] = mapped_column(String(255))
    values_digest: Mapped[str] = mapped_column(String(40))
    values_json: Mapped[str] = mapped_column(Text)
    process_instance_id: Mapped[int] = mapped_column(
        ForeignKey("spiff_process_instance.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ux_spiff_active_key", "process_key", "key_name", "values_digest", unique=True),)


class QueuedMessage(Base):
    """A message accepted with ``execution_mode=asynchronous`` and not routed yet: the work queue of every worker.

    Written in the accept's transaction, deleted in the transaction that routes the message, so a crash between
    the two loses nothing and routes nothing twice. ``order_key`` (the message's correlation keys, canonical) keeps
    the order of arrival per key: only the oldest row of a key is claimed; a message without keys has none.
    """

    __tablename__ = "spiff_message_queue"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_instance_id: Mapped[int] = mapped_column(
        ForeignKey("spiff_message_instance.id", ondelete="CASCADE"), unique=True)
    order_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (Index("ix_spiff_message_queue_order", "order_key", "id"),)


class CatalogGeneration(Base):
    """One row: bumped by every reload request; each worker reloads its BPMN folder when it sees it change."""

    __tablename__ = "spiff_catalog_generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[float] = mapped_column(Double)


class Event(Base):
    """The durable event feed: a row per change a host may react to, in the change's own transaction.

    The feed's order is (``xact``, ``id``): ``xact`` is the writing transaction's id on PostgreSQL (0 on SQLite, whose
    one writer hands out ids in commit order). Readers see only rows of transactions older than every one still in
    flight, so a reader that keeps the last event it saw never skips a row that commits late, and no writer waits
    for another (see ``Tx.events_after``).
    """

    __tablename__ = "spiff_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    xact: Mapped[int] = mapped_column(BigInteger, server_default="0")
    kind: Mapped[str] = mapped_column(String(64))
    process_instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message_instance_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Double, index=True)

    # the feed in its order (xact, id); an instance's own events, newest first, for the console's instance page
    __table_args__ = (Index("ix_spiff_event_xact_id", "xact", "id"),
                      Index("ix_spiff_event_instance", "process_instance_id", "id"))
