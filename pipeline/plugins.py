"""The entry points through which stages and simulators plug into the plumbing.

``pipeline/`` imports no stage: it finds them here, by group, in the installed metadata.

- ``claimflow.commands``: ``register(subparsers)`` adds a package's own ``claimflow``
  commands (``pipeline/cli.py`` is only the frame);
- ``claimflow.services``: ``main(settings)`` of each long-running process, by name
  (``claimflow service NAME``; the supervisor starts them all);
- ``claimflow.apps``: ``main(settings)`` of the processes people use rather than the
  pipeline (the console): ``claimflow service NAME`` runs them too and ``claimflow run``
  starts them, but a supervisor only when asked (demo, benchmarks and tests run without);
- ``claimflow.corrections``: ``queue(bootstrap, settings, as_json=, messages=)`` returns the
  lines of one correction work queue (``claimflow corrections list``), shown in name order;
- ``claimflow.rule_titles``: ``titles()`` returns {rule id: what the rule checks}, to name
  the edits in ``claimflow report``;
- ``claimflow.tracking``: {topic: handler(ledger, key, value)}, what a stage's records
  change in the tracker's ``Ledger`` (``pipeline/tracker.py``): the topics it writes (or
  reads, for what it decides about them); the tracker follows those and the stage's
  dead-letter topic, named after the entry point;
- ``claimflow.payer_adapters``: how the claims service reaches a payer
  (``services/claims/adapters``).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

COMMANDS = "claimflow.commands"
SERVICES = "claimflow.services"
APPS = "claimflow.apps"
CORRECTIONS = "claimflow.corrections"
RULE_TITLES = "claimflow.rule_titles"
TRACKING = "claimflow.tracking"


def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    """The group's entry points, sorted by name (installed metadata has no other order)."""
    return sorted(importlib.metadata.entry_points(group=group), key=lambda ep: ep.name)


def service_names() -> list[str]:
    """The registered services' names, without importing them."""
    return [ep.name for ep in entry_points(SERVICES)]


def app_names() -> list[str]:
    """The registered apps' names (processes for people, such as the console)."""
    return [ep.name for ep in entry_points(APPS)]


def service(name: str) -> Callable[[Any], None]:
    """The ``main(settings)`` of the service (or app) registered as ``name``."""
    for ep in entry_points(SERVICES) + entry_points(APPS):
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    known = ", ".join(service_names() + app_names())
    raise KeyError(f"no service named {name!r} (registered: {known})")


def rule_titles() -> dict[str, str]:
    """What each registered rule checks, by rule id (empty when no stage registers any)."""
    titles: dict[str, str] = {}
    for ep in entry_points(RULE_TITLES):
        titles.update(ep.load()())
    return titles


def tracked() -> dict[str, dict[str, Any]]:
    """What each stage's records change in the tracker, by stage name: {topic: handler}."""
    return {ep.name: dict(ep.load()) for ep in entry_points(TRACKING)}
