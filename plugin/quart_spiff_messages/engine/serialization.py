"""Saving and restoring: an instance's state is serialized without its spec (specs live in memory, and once per
version in the database), so a state is a few KB and always resumes on the spec it started with. Warm instances
(:mod:`quart_spiff_messages.warm`) skip the restore when the state read back is the one kept."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from ..catalog import ProcessEntry
from ..scripts import ScriptEngine
from ..warm import Warm
from .instance import Instance, wire_loops
from .services import SERVICE


class _SpeclessWorkflowConverter(BpmnWorkflowConverter):  # type: ignore[misc]
    """Serialize a workflow without its spec; the caller hands the spec back when restoring."""

    def to_dict(self, workflow: Any) -> dict[str, Any]:
        dct: dict[str, Any] = WorkflowConverter.to_dict(self, workflow)
        dct["spec"] = workflow.spec.name
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct: dict[str, Any], spec: Any = None, subprocess_specs: Any = None) -> Any:
        dct.pop("spec", None)
        dct.pop("subprocess_specs", None)
        workflow = self.target_class(spec, subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def serializers() -> tuple[Any, Any]:
    """The instance serializer (specless) and the spec serializer (SpiffWorkflow's own)."""
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = _SpeclessWorkflowConverter
    return (BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(config)),
            BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(dict(SPIFF_CONFIG))))


class Serialization:
    """The engine's saving and restoring (a mixin of :class:`~quart_spiff_messages.engine.Engine`)."""

    script_engine: ScriptEngine
    warm: Warm[Instance]
    _serializer: Any
    _spec_serializer: Any

    def dump_spec(self, entry: ProcessEntry) -> str:
        registry = self._spec_serializer.registry
        return json.dumps({
            "spec": registry.convert(entry.spec),
            "subprocess_specs": {k: registry.convert(v) for k, v in entry.subprocess_specs.items()},
        })

    def load_spec(self, entry_like: ProcessEntry, spec_json: str) -> ProcessEntry:
        """A catalog entry for an older spec version, restored from the database."""
        registry = self._spec_serializer.registry
        dct = json.loads(spec_json)
        spec = registry.restore(dct["spec"])
        subs = {k: registry.restore(v) for k, v in dct["subprocess_specs"].items()}
        return ProcessEntry(entry_like.key, entry_like.process_id, entry_like.group, entry_like.file,
                            entry_like.spec_version, spec, subs, entry_like.interrupting_starts,
                            entry_like.one_per_key_starts)

    def keep(self, instance_id: int, state: str, inst: Instance) -> None:
        """Keep ``inst``, committed as ``state``, for the next :meth:`load` of that instance (a failed one never)."""
        if inst.failure is None and not inst.workflow.completed:
            self.warm.keep(instance_id, state, inst)

    def dump(self, inst: Instance) -> str:
        return str(self._serializer.serialize_json(inst.workflow))

    def load(self, state: str, entry: ProcessEntry, instance_id: int | None = None) -> Instance:
        """The instance saved as ``state``; with ``instance_id``, the one :meth:`keep` kept for it when it was kept
        with exactly this state and entry (see :mod:`quart_spiff_messages.warm`), else a fresh one."""
        if instance_id is not None:
            warm = self.warm.take(instance_id, state)
            if warm is not None and warm.entry is entry and warm.failure is None:
                warm.run_info = None
                warm.called_services = SERVICE in state
                return warm
        wire_loops(entry)
        dct = json.loads(state)
        self._serializer.migrate(dct)
        wf = self._serializer.from_dict(dct, spec=entry.spec, subprocess_specs=entry.subprocess_specs)
        wf.script_engine = self.script_engine  # the script engine is not serialized
        inst = Instance(wf, entry)
        inst.called_services = SERVICE in state
        return inst
