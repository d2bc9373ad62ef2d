"""quart-spiff-messages: send BPMN messages into SpiffWorkflow workflows from a Quart app."""

from .catalog import Catalog, CatalogError
from .config import ConfigError, Settings
from .extension import SpiffMessages
from .router import Outcome

__all__ = ["Catalog", "CatalogError", "ConfigError", "Outcome", "Settings", "SpiffMessages"]
