"""Query strings and answers of Spiff Arena's instance, model, group and Home calls, for validation and the
OpenAPI document. Answers list the fields Arena's frontend reads; more may come (``extra`` allowed)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from .schemas import MAX_INT, ArenaInstanceOut, Id, Pagination

MAX_MODELS_PER_PAGE = 2000  # Arena's frontend asks 1,500 (the filter) and 2,000 (its group tree) at once


class ArenaPage(BaseModel):
    page: int = Field(1, ge=1, le=MAX_INT // MAX_MODELS_PER_PAGE)
    per_page: int = Field(100, ge=1, le=MAX_MODELS_PER_PAGE)


class ShowQuery(BaseModel):
    process_identifier: str | None = Field(
        None, description="A process id (a call activity's): answer the file that defines it as the diagram.")


class TaskInfoQuery(BaseModel):
    most_recent_tasks_only: bool = Field(False, description="One row per element: the one that changed last.")
    bpmn_process_guid: str | None = Field(
        None, description="The guid of a call activity's or subprocess's task: only the rows of what it ran.")
    to_task_guid: str | None = Field(None, description="Not served: the instance as it was at a task.")


class ModelListQuery(ArenaPage):
    process_group_identifier: str | None = None
    recursive: bool = False
    include_parent_groups: bool = False
    filter_runnable_by_user: bool = False
    group_by_process_group: bool = False
    search: str | None = Field(None, description="Part of a model's id or name.")


class GroupListQuery(ArenaPage):
    process_group_identifier: str | None = None


class TaskListQuery(ArenaPage):
    process_instance_id: Id | None = None


class ArenaInstanceShowOut(ArenaInstanceOut):
    model_config = ConfigDict(extra="allow")
    process_initiator_username: str
    start_in_seconds: int | None
    task_updated_at_in_seconds: int
    end_in_seconds: int | None
    bpmn_version_control_identifier: str
    bpmn_version_control_type: str
    bpmn_xml_file_contents: str | None
    bpmn_xml_file_contents_retrieval_error: str | None
    process_model_with_diagram_identifier: str | None = None
    process_metadata: list[dict[str, Any]]


class TaskInfoRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    guid: str
    state: str
    bpmn_identifier: str
    bpmn_name: str | None
    typename: str
    task_definition_properties_json: dict[str, Any]
    bpmn_process_definition_identifier: str
    bpmn_process_guid: str | None
    properties_json: dict[str, Any]
    runtime_info: dict[str, Any]


class TaskInfoOut(RootModel[list[TaskInfoRow]]):
    """A bare array, as Arena answers it."""


class ProcessModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    display_name: str
    description: str
    primary_file_name: str
    primary_process_id: str
    is_executable: bool
    files: list[dict[str, Any]]
    parent_groups: list[dict[str, Any]] | None


class ProcessModelListOut(BaseModel):
    results: list[ProcessModelOut]
    pagination: Pagination


class ProcessGroupOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    display_name: str
    description: str
    process_models: list[dict[str, Any]]
    process_groups: list[dict[str, Any]]


class ProcessGroupListOut(BaseModel):
    results: list[ProcessGroupOut]
    pagination: Pagination


class ModelStats(BaseModel):
    instance_count: int
    last_run_in_seconds: int | None


class ProcessModelStatsOut(RootModel[dict[str, ModelStats]]):
    """Process model id -> its counts (`{}` when no instance ran)."""


class OnboardingOut(BaseModel):
    """Nothing to onboard a user with: `{}`."""

    model_config = ConfigDict(extra="allow")


class InstructionOut(BaseModel):
    task: dict[str, Any] | None


class ArenaListOut(BaseModel):
    results: list[dict[str, Any]]
    pagination: Pagination
