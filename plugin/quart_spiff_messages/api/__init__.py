"""The HTTP API (a blueprint) and its error answers; the health probes."""

from .health import create_health_blueprint
from .routes import create_blueprint, create_metrics_blueprint

__all__ = ["create_blueprint", "create_health_blueprint", "create_metrics_blueprint"]
