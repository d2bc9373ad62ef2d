"""One catalog's working set: the core, the router, human tasks, timers, upkeep and reads over one store.

A reload makes a new one and swaps it in one assignment, so a request keeps the runtime it started with and never
sees two catalogs."""

from __future__ import annotations

from .catalog import Catalog
from .core import Core
from .engine import Engine
from .queued import Queued
from .reads import Reads
from .router import Router
from .store import Store
from .tasks import Tasks
from .timers import Timers
from .upkeep import Upkeep


class Runtime:
    def __init__(self, catalog: Catalog, core: Core, store: Store, max_ttl_seconds: int) -> None:
        self.catalog = catalog
        self.store = store
        self.core = core
        self.router = Router(catalog, core, store, max_ttl_seconds)
        self.upkeep = Upkeep(self.router)
        self.reads = Reads(store, core)
        self.tasks = Tasks(self.router)
        self.timers = Timers(self.router)
        self.queued = Queued(self.router)

    @classmethod
    def create(cls, catalog: Catalog, engine: Engine, store: Store, max_ttl_seconds: int) -> Runtime:
        return cls(catalog, Core(catalog, engine, store), store, max_ttl_seconds)

    @property
    def engine(self) -> Engine:
        return self.core.engine

    def with_catalog(self, catalog: Catalog) -> Runtime:
        runtime = Runtime(catalog, self.core.with_catalog(catalog), self.store, self.router.max_ttl_seconds)
        runtime.router.unflushed = self.router.unflushed  # still to be routed, whatever the catalog
        runtime.router.on_queued = self.router.on_queued
        return runtime
