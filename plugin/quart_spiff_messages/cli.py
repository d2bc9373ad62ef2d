"""``spiff-messages``: serve a BPMN folder, upgrade the database.

Every option also reads its ``SPIFF_MESSAGES_*`` environment variable.

The same commands are registered on the host app's CLI (``quart spiff-messages db-upgrade``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from quart.cli import ScriptInfo

from .catalog import Catalog, CatalogError
from .config import DEFAULT_DATABASE_URL, PREFIX, ConfigError, Settings, from_environment

F = TypeVar("F", bound=Callable[..., Any])


def _option(name: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """An option that also reads ``SPIFF_MESSAGES_<name>``."""
    return click.option(*decls, envvar=PREFIX + name, show_envvar=True, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quart-spiff-messages")
def main() -> None:
    """Route BPMN messages into SpiffWorkflow process instances."""


@main.command()
@_option("BPMN_DIR", "--bpmn-dir", required=True, type=click.Path(exists=True, file_okay=False),
         help="Folder of BPMN files; sub-folders are process groups.")
@_option("DATABASE_URL", "--database-url", default=DEFAULT_DATABASE_URL, show_default=True,
         help="SQLAlchemy URL (sqlite:///file.db or postgresql://user@host/db).")
@_option("HOST", "--host", default="127.0.0.1", show_default=True)
@_option("PORT", "--port", default=7000, show_default=True, type=int)
@_option("WORKERS", "--workers", default=1, show_default=True, type=click.IntRange(min=1),
         help="Worker processes (Hypercorn).")
@_option("URL_PREFIX", "--url-prefix", default="/v1.0", show_default=True)
@_option("BACKLOG", "--backlog", default=2048, show_default=True, type=click.IntRange(min=1),
         help="Connections the kernel queues until a worker accepts them (Hypercorn's backlog, 100 of its own; "
              "Linux caps it at net.core.somaxconn).")
@_option("KEEP_ALIVE_TIMEOUT_SECONDS", "--keep-alive-timeout", default=5.0, show_default=True, metavar="SECONDS",
         type=click.FloatRange(min=0, min_open=True),
         help="Close a connection idle this long (Hypercorn's keep_alive_timeout). Behind a load balancer that "
              "reuses connections, set it above the balancer's idle timeout.")
@_option("BODY_TIMEOUT_SECONDS", "--body-timeout", default=30.0, show_default=True, metavar="SECONDS",
         type=click.FloatRange(min=0, min_open=True),
         help="Answer 408 when a request body has not arrived in full after this long (Quart's BODY_TIMEOUT).")
def serve(bpmn_dir: str, database_url: str, host: str, port: int, workers: int, url_prefix: str, backlog: int,
          keep_alive_timeout: float, body_timeout: float) -> None:
    """Serve the messages API for BPMN_DIR with Hypercorn."""
    from hypercorn.config import Config
    from hypercorn.run import run

    settings = {"BPMN_DIR": os.path.abspath(bpmn_dir), "DATABASE_URL": database_url, "URL_PREFIX": url_prefix,
                "BODY_TIMEOUT_SECONDS": str(body_timeout)}  # an app setting: the workers apply it
    for name, value in settings.items():
        os.environ[PREFIX + name] = value  # workers are spawned processes: settings travel as environment
    _check_before_serving()
    _reload_on_sighup(settings["BPMN_DIR"], database_url)
    metrics_dir = _metrics_dir()
    config = Config()
    config.application_path = "quart_spiff_messages.app:create_app()"
    config.bind = [f"{host}:{port}"]
    config.workers = workers
    config.backlog = backlog
    config.keep_alive_timeout = keep_alive_timeout
    config.accesslog = "-"
    config.errorlog = "-"
    click.echo(f"serving {bpmn_dir} on http://{host}:{port}{url_prefix} (database {_safe(database_url)})", err=True)
    try:
        code = run(config)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(code)


def _reload_on_sighup(bpmn_dir: str, database_url: str) -> None:
    """SIGHUP checks the folder and, if it loads, asks the workers to reload (they follow within a second).

    The signal is blocked in every thread and taken by a thread of its own, so Hypercorn's own SIGHUP handler
    (which restarts the workers, and stops the server when the new folder is broken) never runs.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

    def wait_for_sighup() -> None:
        while True:
            signal.sigwait({signal.SIGHUP})
            try:
                Catalog.load(bpmn_dir)
                generation = asyncio.run(_request_reload(database_url))
            except CatalogError as exc:
                click.echo(f"SIGHUP: reload refused, the workers keep their catalog: {exc}", err=True)
            except Exception as exc:
                click.echo(f"SIGHUP: reload could not be requested: {exc!r}", err=True)
            else:
                click.echo(f"SIGHUP: catalog generation {generation} requested; workers reload within a second",
                           err=True)

    threading.Thread(target=wait_for_sighup, name="spiff-messages-sighup", daemon=True).start()


async def _request_reload(database_url: str) -> int:
    import time

    from .store import Store

    store = Store(database_url, time.time)
    try:
        return await store.write(lambda tx: tx.bump_catalog_generation())
    finally:
        await store.dispose()


def _metrics_dir() -> str | None:
    """Workers write their metrics to files in a folder of this run's own, so /metrics sums every worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None  # the operator's own folder: theirs to clean
    path = tempfile.mkdtemp(prefix="spiff-messages-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _check_before_serving() -> None:
    """Fail in the parent with a clear message instead of in every worker."""
    try:
        settings = Settings.from_mapping(from_environment())
        Catalog.load(settings.bpmn_dir)
    except (CatalogError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command("check")
@click.argument("bpmn_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--app", "app_path", default="", metavar="MODULE:NAME",
              help="The host's Quart app (shop:app, or a factory: shop:create_app()): the script functions and "
                   "service handlers its SpiffMessages has count, decorators included; BPMN_DIR defaults to its "
                   "SPIFF_MESSAGES_BPMN_DIR.")
@_option("SERVICE_HANDLERS", "--service-handlers", default="", metavar="MODULE:NAME",
         help="The host's mapping of service operator ids to handlers (key * for all others).")
@click.option("--script-functions", default="", metavar="MODULE:NAME",
              help="The host's mapping of script function names to functions.")
@click.option("--strict", is_flag=True, help="A service operator without a handler is an error.")
def check_command(bpmn_dir: str | None, as_json: bool, app_path: str, service_handlers: str, script_functions: str,
                  strict: bool) -> None:
    """Load BPMN_DIR as serve does and report its messages, correlations and problems (exit 1 on errors, 2 when
    the app, a mapping or the folder cannot be had)."""
    import json

    from .check import check
    from .host_app import HostAppError, host_functions, load_mapping
    from .services import DEFAULT_KEY

    functions: set[str] = set()
    operators: set[str] = set()
    default_handler = False
    try:
        if app_path:
            host = host_functions(app_path)
            functions |= host.script_functions
            operators |= host.service_operators
            default_handler = host.default_service_handler
            bpmn_dir = bpmn_dir or host.bpmn_dir
        if service_handlers:
            operators |= set(load_mapping(service_handlers, "service handlers"))
        if script_functions:
            functions |= set(load_mapping(script_functions, "script functions"))
    except HostAppError as exc:
        _usage_error(str(exc))
    if not bpmn_dir:
        _usage_error("give BPMN_DIR, or --app whose SPIFF_MESSAGES_BPMN_DIR names it")
    if not os.path.isdir(bpmn_dir):
        _usage_error(f"BPMN folder {bpmn_dir!r} does not exist")
    default_handler = default_handler or DEFAULT_KEY in operators
    report = check(bpmn_dir, script_functions=functions, service_operators=operators - {DEFAULT_KEY},
                   default_service_handler=default_handler, strict=strict)
    click.echo(json.dumps(report.as_json(), indent=2) if as_json else report.as_text())
    sys.exit(0 if report.ok else 1)


def _usage_error(message: str) -> NoReturn:
    """One line on stderr and exit 2: what the user named cannot be had (no usage text, no traceback)."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


@main.command("reload")
@_option("DATABASE_URL", "--database-url", default=DEFAULT_DATABASE_URL, show_default=True)
@_option("BPMN_DIR", "--bpmn-dir", type=click.Path(exists=True, file_okay=False),
         help="Check that this folder loads before asking (recommended).")
def reload_command(database_url: str, bpmn_dir: str | None) -> None:
    """Ask every worker serving DATABASE_URL, on every host, to reload its BPMN folder (within a second)."""
    if bpmn_dir:
        try:
            Catalog.load(bpmn_dir)
        except CatalogError as exc:
            raise click.ClickException(f"reload not requested: {exc}") from exc
    generation = asyncio.run(_request_reload(database_url))
    click.echo(f"catalog generation {generation} requested; workers reload within a second")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@_option("DATABASE_URL", "--database-url", default=DEFAULT_DATABASE_URL, show_default=True)
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str, revision: str) -> None:
    """Apply the schema migrations (serve also does this at start-up)."""
    asyncio.run(_upgrade(database_url, revision))
    click.echo(f"database {_safe(database_url)} is at {revision}")


async def _upgrade(database_url: str, revision: str) -> None:
    import time

    from .store import Store

    store = Store(database_url, time.time)
    try:
        await store.upgrade(revision)
    finally:
        await store.dispose()


@click.group("spiff-messages")
def app_group() -> None:
    """quart-spiff-messages commands for this app."""


@app_group.command("db-upgrade")
@click.pass_context
def app_db_upgrade(ctx: click.Context) -> None:
    """Apply the schema migrations to the app's SPIFF_MESSAGES_DATABASE_URL.

    The app is loaded but no app context is entered: Quart's ``with_appcontext`` runs the command inside an event
    loop of its own, where the migrations' ``asyncio.run`` cannot start.
    """
    app = ctx.ensure_object(ScriptInfo).load_app()
    try:
        settings = Settings.from_mapping(app.config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    asyncio.run(_upgrade(settings.database_url, "head"))
    click.echo(f"database {_safe(settings.database_url)} is at head")
