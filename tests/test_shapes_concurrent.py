"""The shapes of ``test_shapes.py`` under load: ``spiff-messages serve --workers 2``, many instances, messages raced.

50 instances of each message-started or API-started shape (call activity, embedded subprocess, API-started
instance, peers of one process, parallel multi-instance receive task) are started with keys of their own; then all
their messages go out at once, shuffled, from several HTTP clients. Every message must reach the instance of its
own key, no answer may be a 5xx, and every instance must end complete with its own key's data. Runs on a SQLite
file, or on PostgreSQL when ``SPIFF_MESSAGES_TEST_DATABASE`` is set.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from quart_spiff_messages.testing import invariant_violations, serving

from .conftest import CASES

SHAPES = CASES / "shapes"
PER_SHAPE = 50
CLIENTS = 8
HTTP_TIMEOUT_SECONDS = 60.0
SETTLE_SECONDS = 15.0  # how long the final states may take to show (a thrown message is routed after its commit)


@dataclass(frozen=True)
class Call:
    path: str
    json: dict[str, Any]
    expect: int  # the status code a correct server answers
    key: str  # the key of the instance this call is about
    shape: str


@dataclass
class Reply:
    call: Call
    status: int  # 0: no HTTP answer (the transport error is the body)
    body: Any

    @property
    def instance_id(self) -> Any:
        pi = self.body.get("process_instance") if isinstance(self.body, dict) else None
        return pi.get("id") if isinstance(pi, dict) else None

    def __str__(self) -> str:
        text = self.body if isinstance(self.body, str) else repr(self.body)
        return f"POST {self.call.path} {self.call.json} -> {self.status} {text[:400]}"


async def run_all(url: str, calls: Sequence[Call], clients: int = CLIENTS) -> list[Reply]:
    """Send ``calls`` from ``clients`` HTTP clients at once; the replies come back in the order of the calls."""
    replies: list[Reply | None] = [None] * len(calls)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(calls)):
        queue.put_nowait(i)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as http:
            while not queue.empty():
                i = queue.get_nowait()
                call = calls[i]
                try:
                    resp = await http.post(call.path, json=call.json)
                except httpx.HTTPError as exc:
                    replies[i] = Reply(call, 0, f"{type(exc).__name__}: {exc}")
                    continue
                try:
                    body: Any = resp.json()
                except ValueError:
                    body = resp.text
                replies[i] = Reply(call, resp.status_code, body)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return [r for r in replies if r is not None]


def some(items: Sequence[object], limit: int = 5) -> str:
    shown = [str(item) for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"... and {len(items) - limit} more")
    return "\n".join(shown)


# -- the shapes: how each starts, which messages finish it, and what its final data must show -------------------
@dataclass(frozen=True)
class Shape:
    name: str
    key_prefix: str
    start: Callable[[str], Call]
    messages: Callable[[str], list[Call]]
    owns: Callable[[str, dict[str, Any]], bool]  # the final data carries this key's own payload


def _message(shape: str, name: str, key: str, **extra: Any) -> Call:
    return Call(f"/messages/{name}", {"order_id": key, **extra}, 200, key, shape)


def _results_are_own(key: str, data: dict[str, Any]) -> bool:
    results = data.get("results") or []
    return (sorted(r.get("n") for r in results) == [1, 2, 3]
            and all(r.get("order_id") == key for r in results))


SHAPE_LIST = [
    Shape("call activity", "C",
          lambda k: _message("call activity", "ca_start", k),
          lambda k: [_message("call activity", "ca_inner_done", k)],
          lambda k, d: d.get("inner") == {"order_id": k} and d.get("order_id") == k),
    Shape("embedded subprocess", "S",
          lambda k: _message("embedded subprocess", "sp_start", k),
          lambda k: [_message("embedded subprocess", "sp_done", k)],
          lambda k, d: d.get("done") == {"order_id": k} and d.get("order_id") == k),
    Shape("API-started instance", "B",
          lambda k: Call("/process-instances/api_process", {"order_id": k}, 201, k, "API-started instance"),
          lambda k: [_message("API-started instance", "api_confirm", k)],
          lambda k, d: d.get("confirm") == {"order_id": k} and d.get("order_id") == k),
    Shape("peers of one process", "G",
          lambda k: Call("/process-instances/peer_waiter", {"group_id": k}, 201, k, "peers of one process"),
          lambda k: [Call("/process-instances/peer_sender", {"group_id": k}, 201, k, "peers of one process")],
          lambda k, d: d.get("sync") == {"group_id": k} and d.get("group_id") == k),
    Shape("parallel multi-instance receive", "M",
          lambda k: _message("parallel multi-instance receive", "mi_start", k),
          lambda k: [_message("parallel multi-instance receive", "mi_item_done", k, n=n) for n in (1, 2, 3)],
          _results_are_own),
]


async def _instance(http: httpx.AsyncClient, instance_id: int) -> dict[str, Any]:
    resp = await http.get(f"/process-instances/{instance_id}")
    assert resp.status_code == 200, resp.text[:500]
    body: dict[str, Any] = resp.json()["process_instance"]
    return body


async def _settled(url: str, ids: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Every instance's final view, read until all are complete or ``SETTLE_SECONDS`` have passed."""
    views: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + SETTLE_SECONDS
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as http:
        pending = dict(ids)
        while True:
            for key, instance_id in list(pending.items()):
                views[key] = await _instance(http, instance_id)
                if views[key]["status"] == "complete":
                    del pending[key]
            if not pending or time.monotonic() > deadline:
                return views
            await asyncio.sleep(0.5)


async def race_every_shape(url: str) -> list[str]:
    """Start every shape's instances, race their messages; the guarantees that do not hold."""
    failures: list[str] = []
    tag = uuid.uuid4().hex[:6]
    keys = {shape.name: [f"{shape.key_prefix}-{tag}-{i}" for i in range(PER_SHAPE)] for shape in SHAPE_LIST}
    by_name = {shape.name: shape for shape in SHAPE_LIST}

    starts = [shape.start(key) for shape in SHAPE_LIST for key in keys[shape.name]]
    started = await run_all(url, starts)
    bad = [r for r in started if r.status != r.call.expect
           or not isinstance(r.body, dict) or r.body.get("process_instance", {}).get("status") != "waiting"]
    if bad:
        failures.append(f"every start answers 200/201 with a waiting instance ({len(bad)} do not):\n{some(bad)}")
    ids = {r.call.key: r.instance_id for r in started if r.instance_id is not None}
    if len(set(ids.values())) != len(starts):
        failures.append(f"{len(starts)} distinct instances were started ({len(set(ids.values()))})")

    messages = [call for shape in SHAPE_LIST for key in keys[shape.name] for call in shape.messages(key)]
    random.Random(tag).shuffle(messages)
    began = time.monotonic()
    replies = await run_all(url, messages)
    seconds = time.monotonic() - began
    answers = dict(sorted(Counter(f"{r.call.shape}: {r.status}" for r in replies).items()))
    print(f"{len(messages)} messages in {seconds:.1f}s from {CLIENTS} clients: {answers}")

    server_errors = [r for r in replies if r.status == 0 or r.status >= 500]
    if server_errors:
        failures.append(f"no 5xx and no request without an answer ({len(server_errors)}):\n{some(server_errors)}")
    wrong_status = [r for r in replies if r.status != r.call.expect and r not in server_errors]
    if wrong_status:
        failures.append(f"every message is answered 200 (201 for a start) ({len(wrong_status)} are not):\n"
                        f"{some(wrong_status)}")
    strays = [r for r in replies if r.status == 200 and r.instance_id != ids.get(r.call.key)]
    if strays:
        failures.append(f"each message reaches the instance of its own key ({len(strays)} reached another; "
                        f"expected ids {[ids.get(r.call.key) for r in strays[:5]]}):\n{some(strays)}")

    views = await _settled(url, ids)
    for shape_name, shape_keys in keys.items():
        shape = by_name[shape_name]
        not_complete = [f"{k}: {views[k]['status']} waiting_for={views[k]['waiting_for']}"
                        for k in shape_keys if k in views and views[k]["status"] != "complete"]
        if not_complete:
            failures.append(f"{shape_name}: every instance is complete ({len(not_complete)} are not):\n"
                            f"{some(not_complete)}")
        foreign = [f"{k}: {views[k]['data']}" for k in shape_keys if k in views and not shape.owns(k, views[k]["data"])]
        if foreign:
            failures.append(f"{shape_name}: every instance holds its own key's payload ({len(foreign)} do not):\n"
                            f"{some(foreign)}")
    return failures


def test_every_shape_under_concurrent_messages(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serving(SHAPES, database_url, log, workers=2) as server:
        failures = asyncio.run(race_every_shape(server.url))
        alive = server.proc.poll() is None
    failures += [f"invariant: {v}" for v in asyncio.run(invariant_violations(database_url))]
    if not alive:
        failures.append("the server kept running")
    if failures:
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        noise = [line for line in lines if " - - [" not in line]  # everything but Hypercorn's access log
        tail = "\n".join(noise[-40:])
        pytest.fail("\n".join(f"FAIL {f}" for f in failures) + f"\nserver log ({log}), last lines but the access log:"
                    f"\n{tail}", pytrace=False)
