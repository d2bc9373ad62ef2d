"""The engine: the only package that touches SpiffWorkflow workflow objects.

It makes instances (by process id, through a Message Start Event or a timer start event), hands a message to the
one waiting task the index chose, runs to the next wait, drains thrown messages and lists what an instance waits for,
with the correlation values each wait expects. State is serialized without the spec: specs live in memory (and once
per version in the database), so an instance is a few KB and always resumes on the spec it started with.

One module per concern, each a mixin of the facade :class:`Engine`: :mod:`.lifecycle` (new instance, run, the one
rule for failures, retry, status, task data), :mod:`.messages`, :mod:`.timers` (on the core's clock, :mod:`.clock`),
:mod:`.human_tasks`, :mod:`.services`, :mod:`.serialization`; :mod:`.element_states` is the one reading of where an
instance stands. Everything else imports from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..scripts import ScriptEngine
from ..warm import Warm
from .element_states import ElementState
from .element_states import element_states as read_element_states
from .human_tasks import HumanTask, HumanTasks
from .instance import Instance, ProcessFailure
from .lifecycle import Lifecycle
from .messages import Messages, Thrown, Wait
from .serialization import Serialization, serializers
from .services import PENDING, SERVICE, ServicePending, Services, ServiceWait, service_call
from .timers import StartSchedule, Timers, TimerWait

__all__ = [
    "PENDING", "SERVICE", "ElementState", "Engine", "HumanTask", "Instance", "ProcessFailure", "ServicePending",
    "ServiceWait", "StartSchedule", "Thrown", "TimerWait", "Wait",
]


class Engine(Messages, Timers, HumanTasks, Services, Serialization, Lifecycle):
    """SpiffWorkflow behind a small surface: make or load an instance, act on it, run it, read what it waits for.

    Acting and running are separate steps (the transaction core runs an instance once after each action).
    ``correlate_from_data``: a catch whose workflows have no value yet for its correlation key takes the expected
    value from the instance's data, evaluated with the catch's own retrieval expressions.
    """

    def __init__(self, correlate_from_data: bool = True,
                 script_functions: Mapping[str, Callable[..., Any]] | None = None, warm_instances: int = 0) -> None:
        self._serializer, self._spec_serializer = serializers()
        self.script_engine = ScriptEngine(script_functions, on_service=service_call)
        self.correlate_from_data = correlate_from_data
        self.warm: Warm[Instance] = Warm(warm_instances)  # workflows kept between their transactions

    def element_states(self, inst: Instance, failed_element: str | None = None) -> list[ElementState]:
        """Every reached task of the instance with its state: what each view of where it stands reads.

        ``failed_element``: the element the saved failure names (an instance in ``error``).
        """
        waiting = [s.task_id for s in self.service_tasks(inst, waiting_only=True)]
        return read_element_states(inst.workflow, failed_element, waiting)

    def correlations(self, inst: Instance) -> dict[str, Any]:
        return dict(inst.workflow.correlations)
