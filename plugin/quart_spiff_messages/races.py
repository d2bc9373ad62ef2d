"""A testing aid: races of concurrent HTTP requests against a real server, and the guarantees each must keep.

Each race (:func:`one_receiver`, :func:`same_uuid`, :func:`distinct`, :func:`rendezvous`) fires calls from several
HTTP clients at once, each client with one keep-alive connection opened before the race starts, reads the state
back and returns its :class:`Checks`: every guarantee evaluated, with the answers that broke it. Nothing here
asserts: ``tests/test_concurrency.py`` fails on the checks that do not hold, ``bench/race.py`` runs the same races
at larger counts and prints them. The races use keys of their own and compare totals with those before them, so
they also hold on a database that is not empty.

Needs httpx, a test extra (``pip install quart-spiff-messages[test]``); nothing in the package imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .testing import Server

__all__ = ["Call", "Checks", "Race", "Reply", "distinct", "log_excerpt", "log_size", "one_receiver", "race",
           "rendezvous", "same_uuid", "server_errors"]

HTTP_TIMEOUT_SECONDS = 120.0
TTL_SECONDS = 60


# -- running requests from several clients at once --------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


@dataclass
class Reply:
    call: Call
    status: int  # 0: no HTTP answer at all (the text of the transport error is the body)
    body: Any
    seconds: float

    @property
    def error_code(self) -> str | None:
        return self.body.get("error_code") if isinstance(self.body, dict) else None

    @property
    def label(self) -> str:
        if self.status == 0:
            return f"no answer ({str(self.body).split(':')[0]})"
        return f"{self.status} {self.error_code}" if self.error_code else str(self.status)

    @property
    def instance(self) -> dict[str, Any]:
        found = self.body.get("process_instance") if isinstance(self.body, dict) else None
        return found if isinstance(found, dict) else {}

    @property
    def server_error(self) -> bool:
        return self.status == 0 or self.status >= 500

    def __str__(self) -> str:
        query = f"?{'&'.join(f'{k}={v}' for k, v in self.call.params.items())}" if self.call.params else ""
        body = json.dumps(self.call.json) if self.call.json is not None else ""
        answer = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return (f"{self.call.method} {self.call.path}{query} {body} -> {self.status} after {self.seconds:.2f}s "
                f"{_cut(answer, 600)}")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


async def _send(http: httpx.AsyncClient, call: Call) -> Reply:
    started = time.monotonic()
    try:
        resp = await http.request(call.method, call.path, json=call.json, params=call.params)
    except httpx.HTTPError as exc:
        return Reply(call, 0, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    return Reply(call, resp.status_code, body, time.monotonic() - started)


@dataclass
class Race:
    answers: list[list[Reply]]  # per job, in the order of its calls
    seconds: float  # from the first call to the last answer

    @property
    def replies(self) -> list[Reply]:
        return [reply for job in self.answers for reply in job]


async def race(url: str, jobs: Sequence[Sequence[Call]], clients: int) -> Race:
    """Run ``jobs`` from ``clients`` HTTP clients; the answers come back in the order of the jobs.

    The calls of one job go out at the same moment, each from a client of its own; jobs start in order as clients
    become free. Every client connects (a warm-up GET) before the first job starts.
    """
    if not jobs:
        return Race([], 0.0)
    if max(len(job) for job in jobs) > clients:
        raise ValueError("a job has more calls than there are clients")
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # loading the CA bundle for each client would take longer than the race
    async with contextlib.AsyncExitStack() as stack:
        pool: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        everyone = [await stack.enter_async_context(
            httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS, limits=limits, verify=tls))
            for _ in range(clients)]
        warm = await asyncio.gather(*(_send(http, Call("GET", "/message-models")) for http in everyone))
        if any(reply.status != 200 for reply in warm):
            raise RuntimeError(f"warm-up failed: {next(str(r) for r in warm if r.status != 200)}")
        for http in everyone:
            pool.put_nowait(http)
        taking = asyncio.Lock()  # one job takes its clients at a time: two jobs never hold half of what they need
        answers: list[list[Reply]] = [[] for _ in jobs]

        async def run(index: int, job: Sequence[Call]) -> None:
            async with taking:
                mine = [await pool.get() for _ in job]
            try:
                answers[index] = list(await asyncio.gather(*(_send(h, c) for h, c in zip(mine, job, strict=True))))
            finally:
                for http in mine:
                    pool.put_nowait(http)

        started = time.monotonic()
        await asyncio.gather(*(run(i, job) for i, job in enumerate(jobs)))
        return Race(answers, time.monotonic() - started)


def post(name: str, payload: dict[str, Any], **params: Any) -> Call:
    return Call("POST", f"/messages/{name}", json=payload, params=params or None)


# -- reading state back -----------------------------------------------------------------------------------------
async def _get(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    resp = await http.get(path, params=params)
    if resp.status_code != 200:  # reading the state back failed: an HTTPError, as when the server is gone
        raise httpx.HTTPStatusError(f"GET {path} {params} -> {resp.status_code} {resp.text[:500]}",
                                    request=resp.request, response=resp)
    body: dict[str, Any] = resp.json()
    return body


async def total(http: httpx.AsyncClient, path: str, **params: Any) -> int:
    """``pagination.total`` of a list endpoint (``/messages``, ``/process-instances``)."""
    return int((await _get(http, path, **params, per_page=1))["pagination"]["total"])


async def every_row(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        body = await _get(http, path, **params, page=page, per_page=1000)
        rows += body["results"]
        if page >= body["pagination"]["pages"]:
            return rows
        page += 1


PAYMENT_RECEIVES = {"name": "payment_received", "message_type": "receive"}
PAYMENT_SENDS = {"name": "payment_received", "message_type": "send"}
ORDERS = {"process_id": "order_process"}


@dataclass
class Totals:
    receives: int
    sends: int
    messages: int
    orders: int

    @classmethod
    async def read(cls, http: httpx.AsyncClient) -> Totals:
        return cls(receives=await total(http, "/messages", **PAYMENT_RECEIVES),
                   sends=await total(http, "/messages", **PAYMENT_SENDS),
                   messages=await total(http, "/messages"),
                   orders=await total(http, "/process-instances", **ORDERS))


# -- what was checked -------------------------------------------------------------------------------------------
@dataclass
class Checks:
    """The guarantees of one race: all are evaluated, then every one that does not hold is reported."""

    title: str
    facts: dict[str, Any] = field(default_factory=dict)
    results: list[tuple[bool, str, str]] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)  # every answer of the race

    def expect(self, ok: bool, what: str, detail: object = "") -> bool:
        self.results.append((ok, what, "" if ok else str(detail)))
        return ok

    @property
    def failures(self) -> list[str]:
        return [what for ok, what, _ in self.results if not ok]

    def report(self) -> str:
        lines = [f"== {self.title}"]
        lines += [f"   {key}: {value}" for key, value in self.facts.items()]
        for ok, what, detail in self.results:
            lines.append(f"   {'ok  ' if ok else 'FAIL'} {what}")
            lines += [f"          {line}" for line in detail.splitlines()]
        return "\n".join(lines)


def tally(replies: Iterable[Reply]) -> dict[str, int]:
    return dict(sorted(Counter(reply.label for reply in replies).items()))


def some(replies: Sequence[Reply], limit: int = 5) -> str:
    """A few of ``replies``, one a line."""
    shown = [str(reply) for reply in replies[:limit]]
    if len(replies) > limit:
        shown.append(f"... and {len(replies) - limit} more")
    return "\n".join(shown)


def expect_no_server_errors(checks: Checks, replies: Sequence[Reply]) -> None:
    bad = [reply for reply in replies if reply.server_error]
    checks.expect(not bad, f"no 5xx and no request left without an answer ({len(bad)} of {len(replies)})",
                  some(bad))


def run_tag() -> str:
    """Keeps the keys of one run apart from those of earlier runs on the same database (the bench)."""
    return uuid.uuid4().hex[:6]


# -- the races --------------------------------------------------------------------------------------------------
async def one_receiver(url: str, *, clients: int, count: int) -> Checks:
    """``count`` identical correlated messages for one waiting instance: exactly one is delivered."""
    checks = Checks(f"one waiting instance, {count} identical payment_received from {clients} clients")
    order_id = f"ONE-{run_tag()}"
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as http:
        before = await Totals.read(http)
        started = (await race(url, [[post("order_received", {"order_id": order_id, "total": 1})]], 1)).replies[0]
        checks.replies.append(started)
        if not checks.expect(started.status == 200 and started.instance.get("status") == "waiting",
                             "order_received starts an order_process instance that waits", started):
            return checks
        pid = started.instance["id"]
        done = await race(url, [[post("payment_received", {"order_id": order_id, "amount": 1})]] * count, clients)
        checks.facts["race_seconds"] = round(done.seconds, 2)
        replies = done.replies
        checks.replies += replies
        checks.facts["answers"] = tally(replies)
        ok = [r for r in replies if r.status == 200]
        refused = [r for r in replies if r.status == 400 and r.error_code == "message_not_accepted"]
        others = [r for r in replies if r.status != 200 and not (r.status == 400
                                                                 and r.error_code == "message_not_accepted")]
        expect_no_server_errors(checks, replies)
        checks.expect(len(ok) == 1, f"exactly one 200 (got {len(ok)})", some(ok))
        checks.expect(len(refused) == count - 1,
                      f"every other answer is 400 message_not_accepted ({len(refused)} of {count - 1})", some(others))
        if ok:
            checks.expect(ok[0].instance.get("id") == pid and ok[0].instance.get("status") == "complete",
                          "the 200 names the waiting instance, now complete", ok[0])
        rows = await every_row(http, "/messages", **PAYMENT_RECEIVES)
        receives = [row for row in rows if row["process_instance_id"] == pid]
        after = await Totals.read(http)
        checks.facts["receive_rows"] = after.receives - before.receives
        checks.facts["send_rows"] = after.sends - before.sends
        checks.expect(after.receives - before.receives == 1 and len(receives) == 1,
                      f"exactly one payment_received receive row ({after.receives - before.receives} new, "
                      f"{len(receives)} for instance {pid})", json.dumps(receives)[:1500])
        answered = sum(1 for r in replies if not r.server_error)  # a 5xx rolls back: it leaves no row
        checks.expect(after.sends - before.sends == answered, "every POST answered 200 or 400 is kept once as a "
                      f"send row ({after.sends - before.sends} rows for {answered} answers)")
        shown = (await _get(http, f"/process-instances/{pid}"))["process_instance"]
        checks.facts["instance_status"] = shown["status"]
        checks.expect(shown["status"] == "complete", f"instance {pid} is complete (it is {shown['status']})")
        checks.expect(after.orders - before.orders == 1,
                      f"one order_process instance was started ({after.orders - before.orders})")
    return checks


async def same_uuid(url: str, *, clients: int, count: int) -> Checks:
    """``count`` first sends of one buffered message with one ``message_instance_uuid``: stored once, one answer."""
    checks = Checks(f"{count} first POSTs with one message_instance_uuid and a TTL, from {clients} clients")
    key = str(uuid.uuid4())
    call = post("payment_received", {"order_id": f"NOBODY-{run_tag()}", "amount": 1},
                time_to_live_in_seconds=TTL_SECONDS, message_instance_uuid=key)
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as http:
        before = await Totals.read(http)
        done = await race(url, [[call]] * count, clients)
        checks.facts["race_seconds"] = round(done.seconds, 2)
        replies = done.replies
        checks.replies += replies
        checks.facts["answers"] = tally(replies)
        expect_no_server_errors(checks, replies)
        not_202 = [r for r in replies if r.status != 202]
        checks.expect(not not_202, f"every answer is 202 ({count - len(not_202)} of {count})", some(not_202))
        ids = Counter(r.body.get("message_instance", {}).get("id") if isinstance(r.body, dict) else None
                      for r in replies)
        checks.facts["message_instance_ids"] = dict(ids)
        checks.expect(len(ids) == 1 and None not in ids, f"one message_instance id in all answers ({dict(ids)})")
        bodies = Counter(json.dumps(r.body, sort_keys=True) for r in replies)
        checks.expect(len(bodies) == 1, f"all answers are identical ({len(bodies)} different bodies)",
                      "\n".join(f"{n} x {_cut(b, 400)}" for b, n in bodies.most_common(5)))
        after = await Totals.read(http)
        checks.facts["new_message_rows"] = after.messages - before.messages
        newest = (await _get(http, "/messages", per_page=1))["results"]
        checks.expect(after.messages - before.messages == 1,
                      f"one row in GET /messages ({after.messages - before.messages} new)")
        row = newest[0] if newest else {}
        checks.expect((row.get("message_instance_uuid"), row.get("status"), row.get("message_type"))
                      == (key, "ready", "send") and row.get("id") in ids,
                      "that row is the buffered send, with the uuid the answers name", json.dumps(row))
    return checks


async def distinct(url: str, *, clients: int, count: int) -> Checks:
    """``count`` waiting instances, then ``count`` distinct correlated messages: each delivered exactly once."""
    checks = Checks(f"{count} order_received, then {count} distinct payment_received, from {clients} clients")
    tag = run_tag()
    order_ids = [f"M-{tag}-{i}" for i in range(count)]
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as http:
        before = await Totals.read(http)
        done = await race(url, [[post("order_received", {"order_id": o, "total": i})]
                                for i, o in enumerate(order_ids)], clients)
        checks.facts["start_seconds"] = round(done.seconds, 2)
        starts = done.replies
        checks.replies += starts
        checks.facts["start_answers"] = tally(starts)
        expect_no_server_errors(checks, starts)
        not_waiting = [r for r in starts if r.status != 200 or r.instance.get("status") != "waiting"]
        checks.expect(not not_waiting, f"every order_received is 200 and its instance waits "
                      f"({count - len(not_waiting)} of {count})", some(not_waiting))
        pid_of = {o: r.instance.get("id") for o, r in zip(order_ids, starts, strict=True)}
        pids = {pid for pid in pid_of.values() if pid is not None}
        checks.expect(len(pids) == count, f"{count} different instances were started ({len(pids)})")
        done = await race(url, [[post("payment_received", {"order_id": o, "amount": i})]
                                for i, o in enumerate(order_ids)], clients)
        checks.facts["payment_seconds"] = round(done.seconds, 2)
        pays = done.replies
        checks.replies += pays
        checks.facts["payment_answers"] = tally(pays)
        expect_no_server_errors(checks, pays)
        not_ok = [r for r in pays if r.status != 200]
        checks.expect(not not_ok, f"every payment_received is 200 ({count - len(not_ok)} of {count})", some(not_ok))
        wrong = [r for o, r in zip(order_ids, pays, strict=True) if r.status == 200 and (
            r.instance.get("id") != pid_of[o] or r.instance.get("status") != "complete"
            or r.body.get("task_data", {}).get("paid_amount") != (r.call.json or {}).get("amount"))]
        checks.expect(not wrong, "each payment reached the instance of its order, which completed "
                      f"({len(wrong)} did not)", some(wrong))
        await _expect_each_instance_paid_once(checks, http, before, pids, count)
    return checks


async def rendezvous(url: str, *, clients: int, count: int) -> Checks:
    """A buffered payment and the order that waits for it, sent at the same moment: the payment always arrives."""
    checks = Checks(f"{count} pairs of (payment_received with TTL, order_received) sent together, "
                    f"from {clients} clients")
    tag = run_tag()
    jobs: list[list[Call]] = []
    for i in range(count):
        order_id = f"R-{tag}-{i}"
        pay = post("payment_received", {"order_id": order_id, "amount": i}, time_to_live_in_seconds=TTL_SECONDS,
                   message_instance_uuid=str(uuid.uuid4()))
        start = post("order_received", {"order_id": order_id, "total": i})
        jobs.append([pay, start] if i % 2 == 0 else [start, pay])  # half the pairs leave the payment first
    async with httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT_SECONDS) as http:
        before = await Totals.read(http)
        done = await race(url, jobs, clients)
        checks.facts["race_seconds"] = round(done.seconds, 2)
        answers = done.answers
        checks.replies += done.replies
        pairs = [(job[0], job[1]) if i % 2 == 0 else (job[1], job[0]) for i, job in enumerate(answers)]
        pays = [pay for pay, _ in pairs]
        starts = [start for _, start in pairs]
        checks.facts["payment_answers"] = tally(pays)
        checks.facts["order_answers"] = tally(starts)
        expect_no_server_errors(checks, done.replies)
        odd = [r for r in pays if r.status not in (200, 202)]
        checks.expect(not odd, f"every payment is 200 (delivered) or 202 (buffered) ({len(odd)} are not)", some(odd))
        odd = [r for r in starts if r.status != 200]
        checks.expect(not odd, f"every order_received is 200 ({len(odd)} are not)", some(odd))
        # The two orders in which a pair can be served: the order waits first and the payment reaches it (200 +
        # waiting), or the payment is buffered first and the new instance takes it (202 + complete).
        kinds = Counter(f"payment {pay.status} + order {start.instance.get('status')}" for pay, start in pairs)
        checks.facts["pairs"] = dict(sorted(kinds.items()))
        lost = [f"{pay}\n  with {start}" for pay, start in pairs if pay.status == 202 and start.status == 200
                and start.instance.get("status") == "waiting"]
        checks.expect(not lost, f"no pair where the payment was buffered and its order still waits ({len(lost)})",
                      "\n".join(lost[:3]))
        pids = {start.instance.get("id") for start in starts if start.status == 200}
        await _expect_each_instance_paid_once(checks, http, before, pids - {None}, count)
        ready = await every_row(http, "/messages", **PAYMENT_SENDS, status="ready")
        ours = [row for row in ready if str(row["payload"].get("order_id", "")).startswith(f"R-{tag}-")]
        checks.facts["ready_payment_rows"] = len(ours)
        checks.expect(not ours, f"no payment_received send row is left ready ({len(ours)})",
                      "\n".join(json.dumps(row) for row in ours[:3]))
    return checks


async def _expect_each_instance_paid_once(checks: Checks, http: httpx.AsyncClient, before: Totals, pids: set[Any],
                                          count: int) -> None:
    after = await Totals.read(http)
    receives = await every_row(http, "/messages", **PAYMENT_RECEIVES)
    per_instance = Counter(row["process_instance_id"] for row in receives if row["process_instance_id"] in pids)
    new_receives = after.receives - before.receives
    checks.facts["receive_rows"] = new_receives
    twice = {pid: n for pid, n in per_instance.items() if n > 1}
    never = sorted(pids - set(per_instance))
    checks.expect(new_receives == count and not twice and not never and len(pids) == count,
                  f"each instance received its payment exactly once ({new_receives} receive rows for {len(pids)} "
                  f"instances; {len(twice)} received twice, {len(never)} never)",
                  f"twice: {dict(list(twice.items())[:10])}; never: {never[:10]}")
    instances = [row for row in await every_row(http, "/process-instances", **ORDERS) if row["id"] in pids]
    statuses = Counter(row["status"] for row in instances)
    checks.facts["instance_statuses"] = dict(statuses)
    checks.expect(statuses == Counter({"complete": count}), f"all {count} instances are complete ({dict(statuses)})",
                  "; ".join([f"{row['id']}: {row['status']}" for row in instances if row["status"] != "complete"][:10]))
    checks.facts["order_instances"] = after.orders - before.orders
    checks.expect(after.orders - before.orders == count,
                  f"exactly {count} order_process instances (none started twice): {after.orders - before.orders}")


# -- the server log ---------------------------------------------------------------------------------------------
_ACCESS_LINE = re.compile(r'^\S+:\d+ - - \[')  # Hypercorn's access log
_TRACEBACK_GLUE = ("The above exception", "During handling of the above exception", "(Background on this error")


def log_size(server: Server) -> int:
    return server.log.stat().st_size if server.log is not None and server.log.exists() else 0


def server_errors(log: Path | None, offset: int = 0) -> dict[str, int]:
    """Exception lines that end tracebacks, and other lines that mention errors, with how often each came.

    Only the part of the log after ``offset`` (bytes) is read.
    """
    if log is None or not log.exists():
        return {}
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    found: Counter[str] = Counter()
    in_traceback = False
    for line in text.splitlines():
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback:
            if line.strip() and not line.startswith((" ", "\t")):
                found[_cut(line.strip(), 300)] += 1
                in_traceback = False
        elif (not _ACCESS_LINE.match(line) and not line.startswith(_TRACEBACK_GLUE)
              and re.search(r"error|exception|locked|deadlock", line, re.IGNORECASE)):
            found[_cut(line.strip(), 300)] += 1
    return dict(found.most_common())


def log_excerpt(server: Server, offset: int = 0) -> str:
    errors = server_errors(server.log, offset)
    return "\n".join(f"     {n} x {line}" for line, n in errors.items())
