"""Settings: the ``SPIFF_MESSAGES_*`` keys of ``app.config``.

The command line reads the same names from the environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "SPIFF_MESSAGES_"
DEFAULT_DATABASE_URL = "sqlite:///spiff_messages.db"
# Spiff Arena's frontend sends the first four (the identifier on every call once logged in); the API key is ours
CORS_HEADERS = ("Authorization", "Content-Type", "SpiffWorkflow-Authentication-Identifier", "Accept",
                "SpiffWorkflow-Api-Key")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    bpmn_dir: str
    database_url: str = DEFAULT_DATABASE_URL
    url_prefix: str = "/v1.0"
    max_ttl_seconds: int = 300
    openapi: bool = True
    openapi_authorize: bool = False  # the document and its UI ask the API key and the hook (action read_openapi)
    retention_days: float | None = None  # None: keep finished messages forever
    sweep_interval_seconds: float = 1.0
    timer_interval_seconds: float = 1.0  # the timer loop's longest sleep; 0: this worker fires no timers
    lock_timeout_seconds: float = 5.0  # how long a message waits for a busy instance before a 503
    database_retry_seconds: float = 5.0  # how long a lost database is retried before a 503
    max_payload_bytes: int = 1024 * 1024
    max_payload_depth: int = 32
    api_keys: tuple[str, ...] = ()  # empty: no key needed
    metrics_path: str = "/metrics"  # empty: no metrics endpoint
    correlate_from_data: bool = True  # a catch with no key value yet takes it from the instance's data
    # Quart's BODY_TIMEOUT is app-wide: None leaves the host app's own (serve sets 30 s)
    body_timeout_seconds: float | None = None
    liveness_path: str = "/livez"  # empty: not served
    readiness_path: str = "/readyz"  # empty: not served
    readiness_timeout_seconds: float = 1.0  # below a probe's usual 1-2 s timeout, far above a healthy query
    service_attempts: int = 3  # calls of a raising service handler before the instance stops in error
    service_backoff_seconds: float = 1.0  # pause before the 2nd call; doubled before each later one
    service_lease_seconds: float = 30.0  # a claimed call's lease, renewed while its handler runs
    service_handlers: str = ""  # "module:name" of a mapping operator id -> handler ("*": every other operator)
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers (same-origin only)
    cors_headers: tuple[str, ...] = CORS_HEADERS  # request headers a cross-origin caller may send
    route_queued: bool = True  # this worker's work loop routes messages accepted asynchronously
    queue_batch: int = 20  # queued messages routed per transaction
    warm_instances: int = 128  # deserialized workflows kept between their transactions (0: none)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> Settings:
        def get(name: str, default: Any = None) -> Any:
            value = config.get(PREFIX + name)
            return default if value is None or value == "" else value

        bpmn_dir = get("BPMN_DIR")
        if not bpmn_dir:
            raise ConfigError(f"{PREFIX}BPMN_DIR is not set: point it at the folder of BPMN files to serve")
        prefix = str(get("URL_PREFIX", "/v1.0")).rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        try:
            max_ttl = int(get("MAX_TTL_SECONDS", 300))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{PREFIX}MAX_TTL_SECONDS must be an integer") from exc
        if max_ttl < 0:
            raise ConfigError(f"{PREFIX}MAX_TTL_SECONDS must be 0 or more")
        retention = get("RETENTION_DAYS")
        body_timeout = get("BODY_TIMEOUT_SECONDS")
        keys = _strings(get("API_KEY", ()))
        origins = _strings(get("CORS_ORIGINS", ()))
        if any(o != "*" and not o.startswith(("http://", "https://")) for o in origins):
            raise ConfigError(f"{PREFIX}CORS_ORIGINS: each origin is scheme://host[:port], or *: {origins}")
        headers = _strings(get("CORS_HEADERS", CORS_HEADERS))
        if any(not h.replace("-", "").isalnum() for h in headers):
            raise ConfigError(f"{PREFIX}CORS_HEADERS: each entry is a header name: {headers}")
        paths = {name: _path(config.get(PREFIX + name, default)) for name, default in
                 (("METRICS_PATH", "/metrics"), ("LIVENESS_PATH", "/livez"), ("READINESS_PATH", "/readyz"))}
        served = [p for p in paths.values() if p]
        if len(served) != len(set(served)):
            raise ConfigError(f"{PREFIX}METRICS_PATH, {PREFIX}LIVENESS_PATH and {PREFIX}READINESS_PATH must differ "
                              f"(or be empty): {paths}")
        return cls(
            api_keys=keys,
            cors_origins=tuple(o.rstrip("/") for o in origins),
            cors_headers=headers,
            max_payload_bytes=int(_number("MAX_PAYLOAD_BYTES", get("MAX_PAYLOAD_BYTES", 1024 * 1024))),
            max_payload_depth=int(_number("MAX_PAYLOAD_DEPTH", get("MAX_PAYLOAD_DEPTH", 32))),
            retention_days=_number("RETENTION_DAYS", retention) if retention is not None else None,
            lock_timeout_seconds=_number("LOCK_TIMEOUT_SECONDS", get("LOCK_TIMEOUT_SECONDS", 5.0)),
            database_retry_seconds=_number("DATABASE_RETRY_SECONDS", get("DATABASE_RETRY_SECONDS", 5.0)),
            sweep_interval_seconds=_number("SWEEP_INTERVAL_SECONDS", get("SWEEP_INTERVAL_SECONDS", 1.0)),
            timer_interval_seconds=_number("TIMER_INTERVAL_SECONDS", get("TIMER_INTERVAL_SECONDS", 1.0)),
            bpmn_dir=str(bpmn_dir),
            database_url=str(get("DATABASE_URL", DEFAULT_DATABASE_URL)),
            url_prefix=prefix,
            max_ttl_seconds=max_ttl,
            openapi=_bool(get("OPENAPI", True)),
            openapi_authorize=_bool(get("OPENAPI_AUTHORIZE", False)),
            metrics_path=paths["METRICS_PATH"],
            correlate_from_data=_bool(get("CORRELATE_FROM_DATA", True)),
            body_timeout_seconds=_positive("BODY_TIMEOUT_SECONDS", body_timeout) if body_timeout is not None
            else None,
            liveness_path=paths["LIVENESS_PATH"],
            readiness_path=paths["READINESS_PATH"],
            readiness_timeout_seconds=_positive("READINESS_TIMEOUT_SECONDS", get("READINESS_TIMEOUT_SECONDS", 1.0)),
            service_attempts=max(1, int(_number("SERVICE_ATTEMPTS", get("SERVICE_ATTEMPTS", 3)))),
            service_backoff_seconds=_number("SERVICE_BACKOFF_SECONDS", get("SERVICE_BACKOFF_SECONDS", 1.0)),
            service_lease_seconds=_positive("SERVICE_LEASE_SECONDS", get("SERVICE_LEASE_SECONDS", 30.0)),
            service_handlers=str(get("SERVICE_HANDLERS", "")),
            route_queued=_bool(get("ROUTE_QUEUED", True)),
            queue_batch=max(1, int(_number("QUEUE_BATCH", get("QUEUE_BATCH", 20)))),
            warm_instances=int(_number("WARM_INSTANCES", get("WARM_INSTANCES", 128))),
        )


def _strings(value: Any) -> tuple[str, ...]:
    """A list of strings: separated by commas in a string (the environment), or a list or tuple."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{PREFIX}{name} must be a number") from exc
    if number < 0:
        raise ConfigError(f"{PREFIX}{name} must be 0 or more")
    return number


def _positive(name: str, value: Any) -> float:
    """A timeout: 0 would time out every request at once."""
    number = _number(name, value)
    if not 0 < number < math.inf:  # NaN fails too
        raise ConfigError(f"{PREFIX}{name} must be a finite number above 0")
    return number


def _path(value: Any) -> str:
    """A URL path ("" switches the endpoint off)."""
    path = str(value or "").strip().rstrip("/")
    return path if not path or path.startswith("/") else "/" + path


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off")
    return bool(value)


def from_environment(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``SPIFF_MESSAGES_*`` environment variables, then explicit overrides (command-line options)."""
    values: dict[str, Any] = {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return values
