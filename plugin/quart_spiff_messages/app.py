"""App factory for ``spiff-messages serve``: each Hypercorn worker imports ``create_app()`` and reads settings from
the ``SPIFF_MESSAGES_*`` environment variables (workers are spawned, so settings travel as environment)."""

from __future__ import annotations

from quart import Quart

from .config import from_environment
from .extension import SpiffMessages


def create_app() -> Quart:
    app = Quart("quart_spiff_messages")
    app.config.update(from_environment())
    SpiffMessages(app)
    return app
