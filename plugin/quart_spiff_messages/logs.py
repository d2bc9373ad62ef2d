"""What SpiffWorkflow logs that would mislead an operator.

A service task waits for its result by raising :class:`~.engine.ServicePending` inside SpiffWorkflow, which marks
the task ERROR on the way out (logging ``State changed to ERROR`` at INFO) before the engine parks it as STARTED.
That record says a healthy task failed, so it is dropped, and only on that path: the filter looks at the exception
being handled while SpiffWorkflow logs; a task that really fails is logged as before.
"""

from __future__ import annotations

import logging
import sys

from .engine import ServicePending

SPIFF_TASK_LOGGER = "spiff.task"


class ServicePendingIsNoError(logging.Filter):
    """Drops ``State changed to ERROR`` while a service task's :class:`ServicePending` is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(sys.exc_info()[1], ServicePending):
            return True
        return record.getMessage() != "State changed to ERROR"


def quiet_healthy_service_waits() -> None:
    """Install the filter on SpiffWorkflow's task logger (once per process)."""
    logger = logging.getLogger(SPIFF_TASK_LOGGER)
    if not any(isinstance(f, ServicePendingIsNoError) for f in logger.filters):
        logger.addFilter(ServicePendingIsNoError())
