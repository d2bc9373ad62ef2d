"""Waiting receivers in the message list (Spiff Arena's view of who waits for what): a ``receive`` row with status
``ready`` and its correlation keys while the catch waits; ``completed`` once a message reaches it; ``cancelled``
when the wait ends otherwise; one row per wait, never two, and the same positive id from the first listing to the
last (as Arena's rows keep theirs)."""

from __future__ import annotations

from typing import Any


async def ids(client: Any, name: str) -> dict[int | None, tuple[int, str]]:
    """Instance -> (row id, status) of the receive rows of ``name``."""
    resp = await client.post("/v1.0/messages", json={"message_type": ["receive"], "name": name})
    return {r["process_instance_id"]: (r["id"], r["status"]) for r in (await resp.get_json())["results"]}


async def receives(client: Any, name: str) -> list[tuple[str, int | None, Any]]:
    resp = await client.get("/v1.0/messages", query_string={"name": name, "message_type": "receive"})
    assert resp.status_code == 200
    return [(r["status"], r["process_instance_id"], r["correlation_keys"]) for r in (await resp.get_json())["results"]]


async def review(client: Any, ticket: str) -> int:
    resp = await client.post("/v1.0/messages/review_requested", json={"ticket": ticket})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    instance_id: int = (await resp.get_json())["process_instance"]["id"]
    return instance_id


async def test_a_waiting_receiver_is_listed_ready_with_its_keys_then_completed(client: Any) -> None:
    first, second = await review(client, "T-1"), await review(client, "T-2")
    assert await receives(client, "review_cancelled") == [
        ("ready", second, {"ticket_key": {"ticket": "T-2"}}), ("ready", first, {"ticket_key": {"ticket": "T-1"}})]
    ready = await (await client.post("/v1.0/messages", json={"message_type": ["receive"], "status": ["ready"],
                                                             "name": "review_cancelled"})).get_json()
    assert ready["pagination"]["total"] == 2 and all(r["id"] > 0 for r in ready["results"])
    waiting = await ids(client, "review_cancelled")
    sent = await (await client.get("/v1.0/messages")).get_json()
    assert not {i for i, _ in waiting.values()} & {r["id"] for r in sent["results"] if r["status"] != "ready"}

    resp = await client.post("/v1.0/messages/review_cancelled", json={"ticket": "T-1"})
    assert resp.status_code == 200
    rows = await receives(client, "review_cancelled")
    # the first wait became the delivery's receive row (no ready copy left); the second still waits
    assert sorted((s, i) for s, i, _ in rows) == [("completed", first), ("ready", second)]
    # each row kept the id it was listed with while it waited; the send row names the receive row by it
    assert await ids(client, "review_cancelled") == {first: (waiting[first][0], "completed"), second: waiting[second]}
    assert (await resp.get_json())["message_instance"]["counterpart_id"] == waiting[first][0]


async def test_a_wait_that_ends_without_its_message_turns_cancelled_once(client: Any) -> None:
    instance_id = await review(client, "T-3")
    assert await receives(client, "review_cancelled") == [("ready", instance_id, {"ticket_key": {"ticket": "T-3"}})]
    [(listed_id, _)] = (await ids(client, "review_cancelled")).values()
    done = await client.put(f"/v1.0/tasks/{instance_id}/review", json={"approved": True})
    assert done.status_code == 200, await done.get_data(as_text=True)
    assert (await done.get_json())["process_instance"]["status"] == "complete"
    # the boundary event no longer waits: one cancelled row, with the keys it waited for and no error cause
    listed = await (await client.get("/v1.0/messages", query_string={"name": "review_cancelled"})).get_json()
    [row] = listed["results"]
    assert (row["message_type"], row["status"], row["process_instance_id"]) == ("receive", "cancelled", instance_id)
    assert row["correlation_keys"] == {"ticket_key": {"ticket": "T-3"}} and row["failure_cause"] is None
    assert row["process_model_identifier"] == "review_process" and row["id"] == listed_id
    late = await client.post("/v1.0/messages/review_cancelled", json={"ticket": "T-3"})
    assert late.status_code == 400 and await receives(client, "review_cancelled") == [
        ("cancelled", instance_id, {"ticket_key": {"ticket": "T-3"}})]


async def test_the_messages_page_shows_waiting_receivers(client: Any) -> None:
    instance_id = await review(client, "T-4")
    page = await (await client.get("/v1.0/console/messages", query_string={"name": "review_cancelled"})).get_data(
        as_text=True)
    assert "review_cancelled" in page and f"/console/instances/{instance_id}" in page and "T-4" in page
