"""The HTTP API (a blueprint) and its error answers."""

from .routes import create_blueprint, create_metrics_blueprint

__all__ = ["create_blueprint", "create_metrics_blueprint"]
