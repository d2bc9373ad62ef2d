"""Spiff Arena's paths by their Arena meaning: which we serve (with the action the host app's hook is asked about)
and which we do not (always false in ``permissions-check``).

Arena's frontend decides what to show from ``permissions-check``; answering by whichever of our routes a path's
shape happens to match gets it wrong (``POST /process-instances/for-me`` matches our start route, ``GET
/process-instances/unique-milestone-names`` our instance route). So the paths the frontend asks about are named
here, once: the answer for the same URI and method is always the same. A path not named here is answered by the
route of ours that serves it (``shell._action_at``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEGMENT = r"[^/]+"
NUMBER = r"[0-9]+"  # {id}: an instance id, so our own /process-instances/{id}/retry is not Arena's force-run


@dataclass(frozen=True)
class ArenaPath:
    """One of Arena's paths (below the URL prefix): the actions per method we serve it with. A method of
    ``decides`` (all methods when empty) that is not served is answered false; any other method is left to the
    route of ours at that path."""

    pattern: str  # {x} stands for one path segment, {id} for a number
    served: tuple[tuple[str, str], ...] = ()  # (method, action)
    decides: tuple[str, ...] = ()

    def regex(self) -> re.Pattern[str]:
        def placeholder(found: re.Match[str]) -> str:
            return NUMBER if found.group(1) == "id" else SEGMENT

        return re.compile("^" + re.sub(r"\\\{([a-z_]+)\\\}", placeholder, re.escape(self.pattern)) + "/?$")


READ_INSTANCE = "read_process_instance"
READ_MODELS = "read_process_models"
READ_TASK = "read_task"

# Most specific first: the first pattern that matches a path decides.
ARENA_PATHS: tuple[ArenaPath, ...] = (
    # the instance page: show, diagram states, the for-me variants
    ArenaPath("/process-instances/for-me/{m}/{id}/task-info", (("GET", READ_INSTANCE),)),
    ArenaPath("/process-instances/{m}/{id}/task-info", (("GET", READ_INSTANCE),)),
    ArenaPath("/process-instances/for-me/{m}/{id}", (("GET", READ_INSTANCE),)),
    ArenaPath("/process-instances/for-me"),  # the report list of "my" instances: not served
    ArenaPath("/process-instances/unique-milestone-names"),
    ArenaPath("/process-instances/report-metadata"),
    ArenaPath("/process-instances/reports/columns"),
    ArenaPath("/process-instances/reports/{x}"),
    ArenaPath("/process-instances/find-by-id/{id}"),
    ArenaPath("/process-instances/{m}/{id}/run"),
    ArenaPath("/process-instances/{m}/{id}", (("GET", READ_INSTANCE),)),  # POST (force run), DELETE: not served
    # Arena's create-then-run (POST) is not served: our start route at that path differs; GET is our show route
    ArenaPath("/process-instances/{m}", decides=("POST",)),
    ArenaPath("/process-instances"),  # Arena's report list: not served (ours is another list)
    ArenaPath("/process-instance-{action}/{m}/{id}"),  # suspend, resume, terminate, reset, migrate
    ArenaPath("/process-instance-{action}/{m}/{id}/{x}"),
    # tasks
    ArenaPath("/tasks", (("GET", READ_TASK),)),
    ArenaPath("/tasks/{id}/instruction", (("GET", READ_TASK),)),
    ArenaPath("/tasks/{id}/{guid}/task-instances", (("GET", READ_TASK),)),
    ArenaPath("/tasks/completed-by-me/{id}"),
    ArenaPath("/tasks/completed/{id}"),
    ArenaPath("/task-data/{m}/{id}"),
    ArenaPath("/task-data/{m}/{id}/{guid}"),
    ArenaPath("/task-complete/{m}/{id}/{guid}"),
    ArenaPath("/task-assign/{m}/{id}"),
    ArenaPath("/send-event/{m}/{id}"),
    # process models and groups: read-only, from the catalog
    ArenaPath("/process-models/stats", (("GET", READ_MODELS),)),
    ArenaPath("/process-models/{m}/files"),
    ArenaPath("/process-models/{m}/files/{name}"),
    ArenaPath("/process-models/{m}", (("GET", READ_MODELS),)),  # PUT, DELETE, POST (a model in a group): no
    ArenaPath("/process-models", (("GET", READ_MODELS),)),
    ArenaPath("/process-model-publish/{m}"),
    ArenaPath("/process-model-tests/run/{m}"),
    ArenaPath("/process-groups/{g}", (("GET", READ_MODELS),)),
    ArenaPath("/process-groups", (("GET", READ_MODELS),)),
    ArenaPath("/onboarding", (("GET", READ_TASK),)),
    # the rest of Arena's navigation
    ArenaPath("/extensions"),
    ArenaPath("/extensions/{x}"),
    ArenaPath("/data-stores"),
    ArenaPath("/secrets"),
    ArenaPath("/authentications"),
    ArenaPath("/logs/{m}/{id}"),
    ArenaPath("/logs/types"),
    ArenaPath("/users/search"),
    ArenaPath("/user-groups/for-current-user"),
)
_COMPILED = tuple((p.regex(), dict(p.served), p.decides) for p in ARENA_PATHS)


def arena_action(path: str, method: str) -> tuple[bool, str | None]:
    """(whether this table decides ``method`` on ``path``, the action it is served with or None when it is not
    served). ``path`` is below the URL prefix."""
    for regex, served, decides in _COMPILED:
        if regex.match(path) and (not decides or method in decides):
            return True, served.get(method)
    return False, None
