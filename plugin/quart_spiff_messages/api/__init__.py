"""The HTTP API (a blueprint) and its error answers; the health probes."""

from . import arena_pages  # noqa: F401 (declares its routes)
from .health import create_health_blueprint
from .routes import create_blueprint, create_metrics_blueprint

__all__ = ["create_blueprint", "create_health_blueprint", "create_metrics_blueprint"]
