"""Pydantic models: they document the API in the generated OpenAPI document and validate query strings."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from .. import errors as e

MessageStatus = Literal["ready", "running", "completed", "failed", "cancelled", "not_accepted"]
MessageType = Literal["send", "receive"]
# not_started: reserved by an asynchronous start, not run yet; terminated: that start did not take (``error`` says why)
InstanceStatus = Literal["not_started", "waiting", "user_input_required", "complete", "error", "terminated"]
MAX_PER_PAGE = 1000
MAX_INT = 2**53  # ids, pages and epoch seconds stay far below; larger numbers are refused, not overflowed
Id = Annotated[int, Field(ge=1, le=MAX_INT)]
# In a JSON body a number must be a number: `false` is not 0 (query strings are text and are converted).
JsonId = Annotated[int, Field(ge=1, le=MAX_INT, strict=True)]
# Epoch seconds in a search body: an integer or a float, as Spiff Arena takes them (never a boolean or a string).
# (bounded by the year 9999: every bound of it is exact as a float, so the bound itself decides)
MAX_SECONDS = 253402300799
JsonSeconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, strict=True)]


class Payload(RootModel[dict[str, Any]]):
    """The message payload: any JSON object."""


class PageQuery(BaseModel):
    page: int = Field(1, ge=1, le=MAX_INT // MAX_PER_PAGE)
    per_page: int = Field(100, ge=1, le=MAX_PER_PAGE)


class SearchQuery(PageQuery):
    """The query string of `POST /messages`: paging, and the instance whose messages to list (what the Messages
    tab of Spiff Arena's process-instance page sends)."""

    process_instance_id: Id | None = None


class MessageListQuery(SearchQuery):
    name: str | None = None
    status: str | None = Field(None, description="One status, or several separated by commas.")
    message_type: str | None = Field(None, description="send or receive (comma-separated for both).")
    process_model_identifier: str | None = Field(
        None, description="Messages of instances of this process (`group/process_id`).")


class MessageSearch(BaseModel):
    """Filters of `POST /messages` (Spiff Arena's body). A field we do not know is refused, never ignored."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    status: list[MessageStatus] | None = None
    message_type: list[MessageType] | None = None
    process_instance_id: JsonId | None = None
    process_model_identifier: str | None = Field(
        None, description="Messages of instances of this process (`group/process_id`).")
    created_after: JsonSeconds | None = Field(None, description="Epoch seconds (inclusive).")
    created_before: JsonSeconds | None = Field(None, description="Epoch seconds (inclusive).")


class EventQuery(BaseModel):
    after: int = Field(0, ge=0, le=MAX_INT, description="Events with a greater id: the last id the host handled.")
    limit: int = Field(100, ge=1, le=MAX_PER_PAGE)


class EventOut(BaseModel):
    id: int
    kind: str
    process_instance_id: int | None = None
    message_instance_id: int | None = None
    data: dict[str, Any]
    created_at_in_seconds: float


class EventListOut(BaseModel):
    results: list[EventOut]
    next_after: int  # the cursor for the next call: the last id here, or ``after`` when there was none


class InstanceListQuery(PageQuery):
    status: InstanceStatus | None = None
    process_id: str | None = Field(None, description="Process id, with its group as a colon prefix.")


class MessageInstanceOut(BaseModel):
    id: int
    name: str
    process_group: str | None = None
    message_type: MessageType
    status: MessageStatus
    payload: Any = None
    correlation_keys: dict[str, Any] | None = None
    process_instance_id: int | None = None
    counterpart_id: int | None = None
    message_instance_uuid: str | None = None
    failure_cause: str | None = Field(None, description="Why the message failed or was not accepted.")
    cancellation_reason: str | None = Field(
        None, description="Why a `cancelled` row was cancelled: `expired`, `cancelled by request`, or null for a "
                          "wait that ended without its message (never a failure: `failure_cause` stays null).")
    expires_at_in_seconds: int | None = None
    created_at_in_seconds: int | None = None
    updated_at_in_seconds: int | None = None
    process_model_identifier: str | None = Field(
        None, description="The process of the row's instance (`group/process_id`); null for a message sent from "
                          "outside.")
    process_model_display_name: str | None = Field(
        None, description="That process's name (its id when it has none); null for a message sent from outside.")


class ProcessInstanceOut(BaseModel):
    id: int
    process_id: str
    process_group: str
    process_model_identifier: str
    modified_process_id: str
    spec_version: str
    status: InstanceStatus
    correlations: dict[str, Any]
    error: dict[str, Any] | None = None
    created_at_in_seconds: int
    updated_at_in_seconds: int


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class SendQuery(BaseModel):
    """The send query string, validated once here; the TTL's range is the router's rule (it serves Python too)."""

    FIELD_ERRORS: ClassVar[dict[str, type[e.SpiffMessagesError]]] = {
        "time_to_live_in_seconds": e.InvalidTimeToLive,
        "message_instance_uuid": e.InvalidMessageInstanceUuid,
        "execution_mode": e.InvalidExecutionMode,
    }
    time_to_live_in_seconds: int = Field(0, ge=0, le=MAX_INT)
    message_instance_uuid: str | None = Field(
        None, max_length=40, pattern=UUID_PATTERN,
        description="Caller-chosen idempotency key (canonical UUID). Required when the TTL is above 0; "
                    "a replay returns the stored outcome.")
    execution_mode: Literal["synchronous", "asynchronous"] | None = Field(
        None, description="`asynchronous`: the message is written and answered at once (`202`, status "
                          "`running`); a worker routes it right after, keeping the order of arrival per "
                          "correlation key. Follow it with `GET /messages/{id}`.")


def send_query_model(max_ttl: int) -> type[SendQuery]:
    """The send query string as one app documents it, with its configured TTL maximum."""

    class SendQueryOfApp(SendQuery):
        time_to_live_in_seconds: int = Field(
            0, ge=0, le=max_ttl,
            description=f"Seconds (0 to {max_ttl}) to keep an unmatched message until a receiver comes to wait "
                        "for it. 0: the message must match now, or it is refused with 400 message_not_accepted.")

    SendQueryOfApp.__name__ = "SendQuery"
    return SendQueryOfApp


class BufferedOut(BaseModel):
    message_instance: MessageInstanceOut


class WaitOut(BaseModel):
    """A message the instance waits for (``kind`` message), a timer it waits at (``kind`` timer), or a service
    task waiting for its result (``kind`` service_task)."""

    kind: Literal["message", "timer", "service_task"]
    element_id: str
    message_name: str | None = None
    correlation_keys: dict[str, Any] | None = None
    accepts_any: bool | None = None
    timer_type: Literal["duration", "date", "cycle"] | None = None
    due_at_in_seconds: float | None = None
    due_at: str | None = Field(None, description="The timer's due time, ISO 8601 in UTC (`due_at_in_seconds` as "
                                                 "people read it).")


class ServiceTaskOut(BaseModel):
    """A service task: waiting for its handler's (or a callback's) result, completed, or failed."""

    type: str  # service_task
    task_guid: str
    element_id: str
    name: str | None = None
    operator: str
    params: dict[str, Any]
    attempts: int  # failed attempts so far
    last_error: str | None = None
    status: str  # waiting | completed | failed


class TaskOut(BaseModel):
    id: str
    task_guid: str
    element_id: str
    bpmn_identifier: str
    name: str | None = None
    bpmn_name: str | None = None
    type: str
    typename: str
    state: str
    data: dict[str, Any]
    properties: dict[str, Any]
    form: dict[str, str | None]


class ProcessInstanceDetailOut(ProcessInstanceOut):
    data: dict[str, Any]
    waiting_for: list[WaitOut | ServiceTaskOut]  # messages, and service tasks waiting for their result
    tasks: list[TaskOut]  # READY user, manual and plain tasks
    service_tasks: list[ServiceTaskOut] = []


class DeliveredOut(BaseModel):
    """The instance the message reached or started, its latest task data and the message. For an asynchronous
    start: the instance reserved for it (`not_started`, `task_data` empty) and the send row (`running`)."""

    task_data: dict[str, Any]
    process_instance: ProcessInstanceOut
    message_instance: MessageInstanceOut | None = None


class InstanceOut(BaseModel):
    process_instance: ProcessInstanceDetailOut


class Pagination(BaseModel):
    count: int
    total: int
    pages: int


class MessageListOut(BaseModel):
    results: list[MessageInstanceOut]
    pagination: Pagination


class InstanceListOut(BaseModel):
    results: list[ProcessInstanceOut]
    pagination: Pagination


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    error_code: str
    message: str


class CorrelationPropertyOut(BaseModel):
    identifier: str
    retrieval_expression: str
    correlation_keys: list[str]


class StartOut(BaseModel):
    process_model_identifier: str
    process_id: str
    process_group: str
    element_id: str
    message_variable: str | None


class StartEventOut(StartOut):
    one_instance_per_correlation_key: bool = Field(
        False, description="The process starts no second instance here while one with the same correlation key "
        "is active (the spiffworkflow property of that name).")


class CatchOut(StartOut):
    kind: str
    interrupting: bool | None = None
    correlation_properties: list[CorrelationPropertyOut]


class ReloadOut(BaseModel):
    generation: int = Field(description="Reloads asked for so far; every worker loads this generation.")
    processes: int
    messages: int
    buffered_messages_started: int = Field(description="Buffered messages that started a process of the new "
                                           "catalog.")


class MessageModelOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: int = Field(description="A stable number for the message name (the same on every worker and reload).")
    identifier: str
    location: str
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema",
                                        description="The payload's JSON schema: `{}` (BPMN files declare none).")
    process_groups: list[str]
    correlation_properties: list[CorrelationPropertyOut]
    process_model_identifiers: list[str]
    start_events: list[StartEventOut]
    catch_points: list[CatchOut]


class MessageModelsOut(BaseModel):
    messages: list[MessageModelOut]


class StatusOut(BaseModel):
    ok: bool
    can_access_frontend: bool = Field(description="Whether this request's credentials may list messages.")


class PermissionsCheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests_to_check: dict[str, list[str]] = Field(
        description="URI (with or without the URL prefix; query ignored) -> the HTTP methods to check.")


class PermissionsCheckOut(BaseModel):
    results: dict[str, dict[str, bool]]


class ProcessModelOfMessageOut(BaseModel):
    process_model_identifier: str
    file_name: str


class ArenaInstanceOut(ProcessInstanceDetailOut):
    """Spiff Arena's show answer: the instance itself, not wrapped."""

    process_model_display_name: str
