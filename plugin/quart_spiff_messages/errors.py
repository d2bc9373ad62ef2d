"""Every error a client can be answered with, and its ``error_code``: the one place both are written.

Each class is one answer: its HTTP status and its stable ``error_code``. The router, the routes and the names module
raise them; ``api/errors.py`` turns any of them into ``application/problem+json``. A fault outside the client's
control is a 5xx here too (``InstanceBusy``), never a bare 500.
"""

from __future__ import annotations

from typing import Any


class SpiffMessagesError(Exception):
    """A refusal the client is told about unchanged: ``status``, ``error_code``, the message and extra fields."""

    status = 400
    error_code = "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra


# -- names and requests ------------------------------------------------------------------------------------------
class InvalidName(SpiffMessagesError, ValueError):
    """The name cannot be a message or process name; the message says why."""

    error_code = "invalid_message_name"


class InvalidProcessId(SpiffMessagesError):
    error_code = "invalid_process_id"


class InvalidPayload(SpiffMessagesError):
    error_code = "invalid_payload"


class PayloadTooLarge(SpiffMessagesError):
    status = 413
    error_code = "payload_too_large"


class InvalidQueryParameter(SpiffMessagesError):
    error_code = "invalid_query_parameter"


class InvalidRequest(SpiffMessagesError):
    error_code = "invalid_request"


class InvalidExecutionMode(SpiffMessagesError):
    error_code = "invalid_execution_mode"


class InvalidTimeToLive(SpiffMessagesError):
    error_code = "invalid_time_to_live"


class InvalidMessageInstanceUuid(SpiffMessagesError):
    error_code = "invalid_message_instance_uuid"


class MessageInstanceUuidRequired(SpiffMessagesError):
    error_code = "message_instance_uuid_required"


# -- access ------------------------------------------------------------------------------------------------------
class Unauthorized(SpiffMessagesError):
    status = 401
    error_code = "unauthorized"


class Forbidden(SpiffMessagesError):
    status = 403
    error_code = "forbidden"


# -- what the request is about -----------------------------------------------------------------------------------
class ProcessNotFound(SpiffMessagesError):
    status = 404
    error_code = "process_not_found"


class ProcessNotStartable(SpiffMessagesError):
    error_code = "process_not_startable"


class InstanceNotFound(SpiffMessagesError):
    status = 404
    error_code = "process_instance_not_found"


class MessageNotFound(SpiffMessagesError):
    status = 404
    error_code = "message_not_found"


class MessageInstanceUuidConflict(SpiffMessagesError):
    status = 409
    error_code = "message_instance_uuid_conflict"


class MessageNotCancellable(SpiffMessagesError):
    status = 409
    error_code = "message_not_cancellable"


class TaskNotFound(SpiffMessagesError):
    status = 404
    error_code = "task_not_found"


class TaskNotReady(SpiffMessagesError):
    status = 409
    error_code = "task_not_ready"


class TaskAmbiguous(SpiffMessagesError):
    status = 409
    error_code = "task_ambiguous"


class ServiceTaskNotWaiting(SpiffMessagesError):
    """The task exists but waits for no service result (completed already, failed, or not a service task)."""

    status = 409
    error_code = "service_task_not_waiting"


class InstanceNotInError(SpiffMessagesError):
    """Only an instance in ``error`` can be retried."""

    status = 409
    error_code = "process_instance_not_in_error"


class CatalogLoadError(SpiffMessagesError):
    status = 422
    error_code = "catalog_load_error"


# -- faults the client can only wait out -------------------------------------------------------------------------
class RetryLater(SpiffMessagesError):
    """A fault the client waits out: the answer says when to retry (``Retry-After``); nothing was written."""

    status = 503
    retry_after_seconds = 1

    def __init__(self, message: str, retry_after: int | None = None, **extra: Any) -> None:
        seconds = self.retry_after_seconds if retry_after is None else retry_after
        super().__init__(message, headers={"Retry-After": str(seconds)}, retry_after=seconds, **extra)


class InstanceBusy(RetryLater):
    error_code = "instance_busy"


class DatabaseUnavailable(RetryLater):
    """The database stayed unreachable (or read-only) past the retry window, or the commit's outcome is unknown."""

    error_code = "database_unavailable"


class InsufficientStorage(RetryLater):
    """The database's disk is full. It recovers by itself once space is freed."""

    status = 507
    error_code = "insufficient_storage"
    retry_after_seconds = 30
