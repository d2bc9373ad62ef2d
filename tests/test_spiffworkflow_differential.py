"""Differential tests: SpiffWorkflow's own test diagrams, run in-process with plain SpiffWorkflow and through the
extension over HTTP, completing the same human tasks with the same data, must end alike.

Compared: the instance's status, its data (the latest completed task's, as both sides answer it), the state of every
element reached (ours read with ``Reads.element_states``, the one reading of where an instance stands) and the
messages it threw. The diagrams are SpiffWorkflow's, copied unchanged into ``bpmn_cases/spiffworkflow/`` (see its
README). They cover the two ways the extension used to differ: a condition that asks ``vars()``/``globals()`` for a
data name (the call-activity escalation diagrams) and a task whose completion raises (a data output that is
missing), plus gateways, loops, multi-instance tasks, a subprocess, call activities, io specifications, a send
task and interrupting and non-interrupting boundary messages (a step then sends the message: to the one waiting
task that catches it in-process, over ``POST /v1.0/messages`` here).

One normalization on SpiffWorkflow's side: when a step raises, the task the exception names is reported ERROR, as
SpiffWorkflow itself marks a task whose run raises (``TaskSpec._run``); a task whose *completion* raises (a missing
data output) it leaves COMPLETED with nothing after it, where the extension stops the instance in ``error`` at that
task so that a retry can run it again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions import MessageEventDefinition
from SpiffWorkflow.exceptions import WorkflowException
from SpiffWorkflow.spiff.parser import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from quart_spiff_messages import SpiffMessages

from .conftest import CASES

SPIFF = CASES / "spiffworkflow"
_INTERRUPTS, _NON_INTERRUPT = "sid-db1e1749-03ee-46aa-8674-bba07b1bd167", "sid-60e2cc58-68c9-4cb5-a95c-22e3e311b6b9"
_LONG_TASK, _ACK = "sid-6FBBB56D-00CD-4C2B-9345-486986BB4992", "sid-D3365C47-2FAE-4D17-98F4-E68B345E18CE"
pytestmark = pytest.mark.bpmn(SPIFF)
_PREDICTED = TaskState.MAYBE | TaskState.LIKELY


@dataclass(frozen=True)
class Step:
    """Complete the READY human task ``name`` (an element id) with ``data``, or send message ``name`` with it."""

    kind: str  # task | message
    name: str
    data: Mapping[str, Any] = field(default_factory=dict)


def task(element: str, **data: Any) -> Step:
    return Step("task", element, data)


def message(name: str, **payload: Any) -> Step:
    return Step("message", name, payload)


@dataclass(frozen=True)
class Scenario:
    """A process of one folder, started with ``data``, then driven by ``steps``."""

    id: str
    group: str
    process: str
    data: Mapping[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Outcome:
    status: str
    data: dict[str, Any]
    states: Counter[tuple[str, str, str]]  # (process id, task spec name, state) -> how many tasks
    thrown: list[tuple[str, Any]]
    failed_task: str | None = None


SCENARIOS = [
    # a gateway condition: 'should_escalate' in vars() or 'should_escalate' in globals()
    Scenario("call-activity escalation, escalated", "escalation", "CallActivity-Escalation-Test",
             {"should_escalate": True}),
    Scenario("call-activity escalation, not escalated", "escalation", "CallActivity-Escalation-Test",
             {"should_escalate": False}),
    # a user task with a data output association to a data object it did not set: its completion raises
    Scenario("data object output missing", "data_object", "Process", {}, (task("generate_data"),)),
    Scenario("data objects through a subprocess", "data_object", "Process", {},
             (task("generate_data", obj_1="hello"), task("task_1", obj_1="hello again"),
              task("read_data", obj_1="hello again"), task("placeholder", obj_1="changed in the subprocess"))),
    Scenario("call activity with an io specification", "io_spec", "parent"),
    # a send task whose message nobody in the folder receives, then a catch for the reply
    Scenario("a send task, then a catch", "collaboration", "process_buddy", {"lover_name": "Peggy"}),
    Scenario("inclusive gateway, parallel conditions", "inclusive_gateway", "main", {},
             (task("set_data", v=0, u=1, w=1),)),
    Scenario("inclusive gateway, default only", "inclusive_gateway", "main", {},
             (task("set_data", v=-1, u=-1, w=-1),)),
    Scenario("inclusive gateway, no path from the second gateway", "inclusive_gateway", "main", {},
             (task("set_data", v=0, u=-1, w=-1),)),
    Scenario("exclusive gateway loop", "gateway_loop", "main", {}, (task("task"),)),
    Scenario("standard loop", "standard_loop", "main", {"done": False},
             (task("any_task"), task("any_task", done=False), task("any_task", done=True))),
    Scenario("parallel multi-instance over input data", "parallel_multiinstance_loop_input", "main",
             {"input_data": [1, 2, 3]},
             (task("any_task", output_item=2), task("any_task", output_item=4), task("any_task", output_item=6))),
    Scenario("sequential multi-instance by cardinality", "sequential_multiinstance_cardinality", "main", {},
             (task("any_task", output_item=0), task("any_task", output_item=1), task("any_task", output_item=2))),
    # boundary message events on a user task
    Scenario("interrupting boundary message", "message_interrupts", _INTERRUPTS, {},
             (message("Test Message"), task(_ACK))),
    Scenario("interrupting boundary message, task done first", "message_interrupts", _INTERRUPTS, {},
             (task(_LONG_TASK),)),
    Scenario("non-interrupting boundary message", "message_non_interrupt", _NON_INTERRUPT, {},
             (message("Test Message"), task(_ACK), task(_LONG_TASK))),
    Scenario("non-interrupting boundary message, task done first", "message_non_interrupt", _NON_INTERRUPT, {},
             (message("Test Message"), task(_LONG_TASK), task(_ACK))),
]


def _json(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps({k: v for k, v in data.items() if not callable(v)}, default=str))
    return out


# -- plain SpiffWorkflow ---------------------------------------------------------------------------------------------
def reference(scenario: Scenario) -> Outcome:
    parser = SpiffBpmnParser()
    for path in sorted((SPIFF / scenario.group).glob("*.bpmn")):
        parser.add_bpmn_file(str(path))
    wf = BpmnWorkflow(parser.get_spec(scenario.process), parser.get_subprocess_specs(scenario.process))
    thrown: list[tuple[str, Any]] = []
    failed = None
    try:
        for task in wf.get_tasks(state=TaskState.READY):
            task.data.update(scenario.data)
        wf.do_engine_steps()
        thrown += _drain(wf)
        for step in scenario.steps:
            if step.kind == "message":
                _send(wf, step.name, dict(step.data))
            else:
                ready = next(t for t in wf.get_tasks(state=TaskState.READY, manual=True)
                             if t.task_spec.bpmn_id == step.name)
                ready.data.update(step.data)
                ready.run()
            wf.do_engine_steps()
            thrown += _drain(wf)
    except WorkflowException as exc:
        raised = getattr(exc, "task", None)
        assert raised is not None, exc
        failed = raised.task_spec.bpmn_id
        if raised.state != TaskState.ERROR:
            raised._set_state(TaskState.ERROR)
    status = ("error" if failed else "complete" if wf.is_completed() else
              "user_input_required" if wf.get_tasks(state=TaskState.READY, manual=True) else "waiting")
    last = wf.last_task
    data = _json(last.data) if last is not None else _json(wf.data)
    states: Counter[tuple[str, str, str]] = Counter()
    for workflow in (wf, *wf.subprocesses.values()):
        for task in workflow.tasks.values():
            if not task.state & _PREDICTED:
                states[(task.workflow.spec.name, task.task_spec.name, TaskState.get_name(task.state))] += 1
    return Outcome(status, data, states, thrown, failed)


def _send(wf: Any, name: str, payload: dict[str, Any]) -> None:
    """A message for the one waiting task that catches ``name``, with the correlations its properties compute."""
    [waiting] = [t for t in wf.get_tasks(state=TaskState.WAITING)
                 if isinstance(t.task_spec.event_definition, MessageEventDefinition)
                 and t.task_spec.event_definition.name == name]
    md = waiting.task_spec.event_definition
    correlations = md.calculate_correlations(wf.script_engine, md.correlation_properties, payload)
    wf.send_event(BpmnEvent(md, payload, correlations))


def _drain(wf: Any) -> list[tuple[str, Any]]:
    return [(ev.event_definition.name, ev.payload) for ev in wf.get_events()
            if isinstance(ev.event_definition, MessageEventDefinition)]


# -- the extension, over HTTP ----------------------------------------------------------------------------------------
async def ours(client: Any, ext: SpiffMessages, scenario: Scenario) -> Outcome:
    resp = await client.post(f"/v1.0/process-instances/{scenario.group}:{scenario.process}", json=dict(scenario.data))
    body = await resp.get_json()
    assert resp.status_code in (201, 400), body
    pid = body["process_instance"]["id"]
    for step in scenario.steps:
        shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
        if shown["status"] == "error":
            break
        if step.kind == "message":
            resp = await client.post(f"/v1.0/messages/{quote(step.name)}", json=dict(step.data))
        else:
            guid = next(t["id"] for t in shown["tasks"] if t["element_id"] == step.name)
            resp = await client.put(f"/v1.0/tasks/{pid}/{guid}", json=dict(step.data))
        answer = await resp.get_json()
        assert resp.status_code == 200 or (resp.status_code, answer["error_code"]) == (400, "process_error"), answer
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    _, rows = await ext.runtime.reads.element_states(pid)
    states = Counter((r.process_id, r.spec_name, r.state) for r in rows)
    sent = await (await client.get("/v1.0/messages", query_string={"process_instance_id": pid,
                                                                     "message_type": "send"})).get_json()
    thrown = [(m["name"], m["payload"]) for m in reversed(sent["results"])]
    failed = (shown.get("error") or {}).get("task")
    return Outcome(shown["status"], shown["data"], states, thrown, failed)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
async def test_runs_as_spiffworkflow_runs_it(client: Any, ext: SpiffMessages, scenario: Scenario) -> None:
    expected = reference(scenario)
    got = await ours(client, ext, scenario)
    assert (got.status, got.failed_task) == (expected.status, expected.failed_task)
    assert got.data == expected.data
    assert got.thrown == expected.thrown
    only_ours, only_theirs = got.states - expected.states, expected.states - got.states
    assert not only_ours and not only_theirs, f"element states differ: ours {only_ours}, SpiffWorkflow's {only_theirs}"
    assert await ext.runtime.reads.invariant_violations() == []


async def test_the_escalation_diagrams_take_the_branch_their_data_chooses(client: Any, ext: SpiffMessages) -> None:
    """Not only alike: the escalated run ends at the escalated end events SpiffWorkflow's own test expects."""
    for escalate in (True, False):
        got = await ours(client, ext, Scenario("", "escalation", "CallActivity-Escalation-Test",
                                               {"should_escalate": escalate}))
        ended = {name for (_, name, state) in got.states if state == "COMPLETED" and name.startswith("EndEvent_")}
        assert got.status == "complete"
        assert ("EndEvent_specific1_interrupting_escalated" in ended) is escalate
        assert ("EndEvent_specific1_interrupting_normal" in ended) is not escalate
        assert "EndEvent_specific2_interrupting_missingvariable" not in ended


async def test_a_completion_that_raises_is_a_process_error_and_a_retry_runs_the_task_again(
        client: Any, ext: SpiffMessages) -> None:
    started = await (await client.post("/v1.0/process-instances/data_object:Process", json={})).get_json()
    pid = started["process_instance"]["id"]
    [task] = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]["tasks"]
    resp = await client.put(f"/v1.0/tasks/{pid}/{task['id']}", json={})
    body = await resp.get_json()
    assert (resp.status_code, body["error_code"]) == (400, "process_error"), body
    assert (body["task"], body["error_type"]) == ("generate_data", "WorkflowDataException")
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    assert (shown["status"], shown["error"]["task"], shown["tasks"]) == ("error", "generate_data", [])
    _, rows = await ext.runtime.reads.element_states(pid)
    assert [r.marker for r in rows if r.element_id == "generate_data"] == ["error"]
    assert await ext.runtime.reads.invariant_violations() == []
    # Completing it again is refused as for any task that is not READY; a retry makes it READY again.
    again = await client.put(f"/v1.0/tasks/{pid}/{task['id']}", json={"obj_1": "hello"})
    assert again.status_code == 409, await again.get_json()
    retried = await (await client.post(f"/v1.0/process-instances/{pid}/retry")).get_json()
    assert retried["process_instance"]["status"] == "user_input_required", retried
    done = await client.put(f"/v1.0/tasks/{pid}/{task['id']}", json={"obj_1": "hello"})
    assert done.status_code == 200, await done.get_json()
    shown = (await (await client.get(f"/v1.0/process-instances/{pid}")).get_json())["process_instance"]
    assert [t["element_id"] for t in shown["tasks"]] == ["task_1"]
    assert shown["error"] is None
    assert await ext.runtime.reads.invariant_violations() == []
