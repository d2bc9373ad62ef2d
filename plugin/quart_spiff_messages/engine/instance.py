"""A live instance and what every concern of the engine shares about it: its failure, its data as JSON, its loops."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import LoopTask

from ..catalog import ProcessEntry
from ..scripts import RunInfo


@dataclass(frozen=True)
class ProcessFailure:
    """A script or expression failed while the instance ran (or a service task's handler gave up); the instance
    stops in ``error``. ``details`` says more for a service task: its operator, attempts and last error."""

    task: str | None
    task_name: str | None
    error_type: str
    message: str
    details: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "task_name": self.task_name, "error_type": self.error_type,
                "message": self.message, **(self.details or {})}


class Instance:
    """A live workflow plus the catalog entry it runs on; ``run_info`` tells host functions where they run."""

    def __init__(self, workflow: Any, entry: ProcessEntry) -> None:
        self.workflow = workflow
        self.entry = entry
        self.failure: ProcessFailure | None = None
        self.run_info: RunInfo | None = None
        # whether a service task was ever called (its record is in the state): the waiting-only scan is skipped
        # for the instances that never call one, which are most
        self.called_services = False


def wire_loops(entry: ProcessEntry) -> None:
    """Connect each loop's child spec to the loop's merge, in every process that runs the spec.

    SpiffWorkflow 3.2 connects a multi-instance (or standard loop) task's ``merge_child`` to its child's
    ``completed_event`` only when it creates a child, on the in-memory spec. A worker that loads an instance whose
    children another worker (or an earlier run) created never merges them: their outputs are lost and a parallel
    loop never completes. Done once per spec object.
    """
    if getattr(entry.spec, "_spiff_messages_loops_wired", False):
        return
    for wf_spec in (entry.spec, *entry.subprocess_specs.values()):
        for ts in list(wf_spec.task_specs.values()):
            if isinstance(ts, LoopTask):
                child = wf_spec.task_specs[ts.task_spec]
                if not child.completed_event.is_connected(ts.merge_child):
                    child.completed_event.connect(ts.merge_child)
    entry.spec._spiff_messages_loops_wired = True


def json_value(value: Any) -> Any:
    """A JSON-shaped copy (what is not JSON becomes its text), as the state and the answers keep it."""
    return json.loads(json.dumps(value, default=str))


def json_data(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(
        {k: v for k, v in data.items() if not callable(v)}, default=str))
    return out
