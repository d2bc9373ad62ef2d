"""Health probes for load balancers and orchestrators: ``GET /livez`` and ``GET /readyz``.

They sit at the root beside ``/metrics``, so a probe's path does not change with the API's prefix, and outside the
API key and ``authorize`` checks: probes carry no credentials, and a rotated key must not make an orchestrator
restart healthy workers. They tell nothing but ``{"status": "ok"}`` or a 503. They are operations endpoints, not
the API: hidden from the OpenAPI document like ``/metrics`` (whose operations all declare 401 and 403).

Liveness looks at nothing: the process answers. Readiness also asks the database for one row within
``SPIFF_MESSAGES_READINESS_TIMEOUT_SECONDS``. Neither adds anything to other requests (no app-wide hook), and
probes that arrive while a readiness query runs share its answer: a flood of probes costs the database one query
at a time per worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from quart import Blueprint, Response, current_app
from quart_schema import hide

from .. import errors as e
from ..config import Settings
from . import errors

log = logging.getLogger("quart_spiff_messages")
_OK = '{"status": "ok"}'
_NO_STORE = {"Cache-Control": "no-store"}  # a cached probe answer would hide a change


class Readiness:
    """Whether this worker can serve: started (catalog loaded, store open) and the database answers in time."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._running: asyncio.Task[str | None] | None = None
        self._failing = False

    async def check(self, state: Any) -> str | None:
        """Why this worker is not ready, or None when it is. Concurrent callers share one query."""
        task = self._running
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._running = asyncio.ensure_future(self._query(state))
        return await asyncio.shield(task)  # a probe that hangs up does not cancel the others' answer

    async def _query(self, state: Any) -> str | None:
        reason: str | None = None
        error: BaseException | None = None
        try:
            reads = state.runtime.reads  # RuntimeError until the app has started (and after it stopped)
        except RuntimeError as exc:
            reason, error = "the app is not started: its catalog and database are not open", exc
        else:
            try:
                await asyncio.wait_for(reads.ready(), self.timeout_seconds)
            except asyncio.TimeoutError as exc:
                reason, error = f"the database did not answer within {self.timeout_seconds:g} s", exc
            except Exception as exc:  # any failure of the trivial read means: not ready
                # the type only: the text may name hosts and ports, and probes are not authenticated
                reason, error = f"the database did not answer ({type(exc).__name__})", exc
        if (reason is not None) != self._failing:  # log changes, not every probe of an outage
            self._failing = reason is not None
            if reason is not None:
                log.warning("not ready: %s", reason, exc_info=error)
            else:
                log.info("ready again: the database answers")
        return reason


def create_health_blueprint(settings: Settings) -> Blueprint:
    """Liveness at ``SPIFF_MESSAGES_LIVENESS_PATH``, readiness at ``SPIFF_MESSAGES_READINESS_PATH`` (empty: off)."""
    bp = Blueprint("spiff_messages_health", __name__)
    readiness = Readiness(settings.readiness_timeout_seconds)

    if settings.liveness_path:
        @bp.get(settings.liveness_path)
        @hide
        async def liveness() -> Response:
            """The process answers. Nothing else is looked at: a database outage must not restart workers."""
            return Response(_OK, content_type="application/json", headers=_NO_STORE)

    if settings.readiness_path:
        @bp.get(settings.readiness_path)
        @hide
        async def readiness_probe() -> Response:
            """200 when this worker can serve; else 503 ``database_unavailable`` with ``Retry-After``."""
            reason = await readiness.check(current_app.extensions["spiff_messages"])
            if reason is None:
                return Response(_OK, content_type="application/json", headers=_NO_STORE)
            response = await errors.on_refusal(e.DatabaseUnavailable(f"not ready: {reason}"))
            response.headers.update(_NO_STORE)
            return response

    return bp
