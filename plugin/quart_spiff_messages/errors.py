"""Every error a client can be answered with, and its ``error_code``: the one place both are written.

Each class is one answer: its HTTP status, its stable ``error_code``, and (its docstring) what it means, which the
documentation's table of error codes is built from. The router, the routes and the names module raise them;
``api/errors.py`` turns any of them into ``application/problem+json``. A fault outside the client's control is a
5xx here too (``RetryLater``), never a bare 500.
"""

from __future__ import annotations

from collections.abc import Iterator
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
    """The message name cannot be a name (empty segment, bad characters, too long…); the message says why."""

    error_code = "invalid_message_name"


class InvalidProcessId(SpiffMessagesError, ValueError):
    """The process id cannot be a process id (in a path or in the `process_id` filter alike)."""

    error_code = "invalid_process_id"


class InvalidPayload(SpiffMessagesError):
    """The body is not a JSON object, is nested deeper than `SPIFF_MESSAGES_MAX_PAYLOAD_DEPTH`, or holds what JSON
    cannot carry safely (non-finite numbers, lone surrogates, NUL); `field` names where."""

    error_code = "invalid_payload"


class PayloadTooLarge(SpiffMessagesError):
    """The body is larger than `SPIFF_MESSAGES_MAX_PAYLOAD_BYTES`."""

    status = 413
    error_code = "payload_too_large"


class InvalidQueryParameter(SpiffMessagesError):
    """A query parameter does not validate; `field` names it."""

    error_code = "invalid_query_parameter"


class InvalidRequest(SpiffMessagesError):
    """The body does not validate against its schema."""

    error_code = "invalid_request"


class InvalidExecutionMode(SpiffMessagesError):
    """`execution_mode` is neither `synchronous` nor `asynchronous`."""

    error_code = "invalid_execution_mode"


class InvalidTimeToLive(SpiffMessagesError):
    """`time_to_live_in_seconds` is not an integer from 0 to `SPIFF_MESSAGES_MAX_TTL_SECONDS`."""

    error_code = "invalid_time_to_live"


class InvalidMessageInstanceUuid(SpiffMessagesError):
    """The `message_instance_uuid` is not a canonical UUID."""

    error_code = "invalid_message_instance_uuid"


class MessageInstanceUuidRequired(SpiffMessagesError):
    """`time_to_live_in_seconds` is above 0 without a `message_instance_uuid`."""

    error_code = "message_instance_uuid_required"


# -- access ------------------------------------------------------------------------------------------------------
class Unauthorized(SpiffMessagesError):
    """An API key is configured and the request has none, or a wrong one."""

    status = 401
    error_code = "unauthorized"


class Forbidden(SpiffMessagesError):
    """The host app's `authorize(request, action)` refused the request."""

    status = 403
    error_code = "forbidden"


# -- routes ------------------------------------------------------------------------------------------------------
class RouteNotFound(SpiffMessagesError):
    """No operation of the API has this path (under the URL prefix)."""

    status = 404
    error_code = "route_not_found"


class MethodNotAllowed(SpiffMessagesError):
    """The path exists but not with this method; `Allow` lists the methods it has."""

    status = 405
    error_code = "method_not_allowed"


# -- what the request is about -----------------------------------------------------------------------------------
class MessageNotAccepted(SpiffMessagesError):
    """Nothing in scope waits for the message or starts on it, and it has no time to live. The message is kept
    with status `not_accepted`; `reason` says why in a structured form (see the HTTP API's refusal reasons)."""

    error_code = "message_not_accepted"


class ProcessFailed(SpiffMessagesError):
    """A script or expression failed while the instance ran; the instance is stored in `error` and the body
    names the task."""

    error_code = "process_error"


class ProcessNotFound(SpiffMessagesError):
    """No process of that id in the catalog; `did_you_mean` lists the `group:process` ids the client may have meant
    (the same process id in a group, or a close spelling)."""

    status = 404
    error_code = "process_not_found"


class ProcessGroupNotFound(SpiffMessagesError):
    """No process group of that id: no folder of the BPMN folder holds a process (Spiff Arena's process groups)."""

    status = 404
    error_code = "process_group_not_found"


class BpmnProcessNotFound(SpiffMessagesError):
    """`task-info`: the instance has no (sub)process spawned by a task of that `bpmn_process_guid` (Spiff Arena's
    code and status)."""

    error_code = "bpmn_process_not_found"


class ProcessNotStartable(SpiffMessagesError):
    """The process has no plain start event to start it by."""

    error_code = "process_not_startable"


class InstanceNotFound(SpiffMessagesError):
    """No process instance of that id (or not of that process model)."""

    status = 404
    error_code = "process_instance_not_found"


class MessageNotFound(SpiffMessagesError):
    """No message with that `message_instance_uuid`."""

    status = 404
    error_code = "message_not_found"


class MessageTriggerableProcessModelNotFound(SpiffMessagesError):
    """`GET /messages/{name}/process-model`: no Message Start Event in scope starts on that message (Spiff
    Arena's code and status)."""

    error_code = "message_triggerable_process_model_not_found"


class MultipleMessageTriggerableProcessModelsFound(SpiffMessagesError):
    """`GET /messages/{name}/process-model`: several processes start on that message in scope; a group prefix
    chooses one (Spiff Arena's code and status)."""

    error_code = "multiple_message_triggerable_process_models_found"


class MessageInstanceUuidConflict(SpiffMessagesError):
    """The `message_instance_uuid` is already used by a message with another name or payload."""

    status = 409
    error_code = "message_instance_uuid_conflict"


class MessageNotCancellable(SpiffMessagesError):
    """Only a buffered (`ready`) message can be cancelled."""

    status = 409
    error_code = "message_not_cancellable"


class TaskNotFound(SpiffMessagesError):
    """The instance has no task of that guid (or element id); `ready_tasks` lists the READY human tasks it has."""

    status = 404
    error_code = "task_not_found"


class TaskNotReady(SpiffMessagesError):
    """The task is not a READY user, manual or plain task (already completed, not reached yet, or its instance
    finished): of two completions at once, one gets this."""

    status = 409
    error_code = "task_not_ready"


class TaskAmbiguous(SpiffMessagesError):
    """Several READY tasks have that element id: name one by its guid."""

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
    """`POST /catalog/reload`: the BPMN folder does not load; the body has the `file`, `line` and `element_id`,
    and the old catalog stays."""

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
    """The matching instance stayed locked longer than `SPIFF_MESSAGES_LOCK_TIMEOUT_SECONDS`; retry after
    `Retry-After` seconds. Nothing was written."""

    error_code = "instance_busy"


class DatabaseUnavailable(RetryLater):
    """The database could not be reached (or written) for `SPIFF_MESSAGES_DATABASE_RETRY_SECONDS`, or the
    connection was lost during the commit; retry after `Retry-After` with the same `message_instance_uuid`."""

    error_code = "database_unavailable"


class InsufficientStorage(RetryLater):
    """The database's disk is full; nothing was written. It works again once space is freed."""

    status = 507
    error_code = "insufficient_storage"
    retry_after_seconds = 30


class InternalError(SpiffMessagesError):
    """An unexpected error; it is logged with its traceback."""

    status = 500
    error_code = "internal_server_error"


def error_classes() -> Iterator[type[SpiffMessagesError]]:
    """Every class that answers with an ``error_code`` of its own (a class that only groups others has none)."""
    stack = list(SpiffMessagesError.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if "error_code" in vars(cls):
            yield cls
