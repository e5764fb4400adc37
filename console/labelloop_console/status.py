"""``labelloop status``: the campaign view of every project, as a table, once or live."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from labelloop.client import BusClient
    from labelloop.project import ProjectConfig
    from labelloop_console.campaign import CampaignView

__all__ = ["render", "show_status"]


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


COLUMNS = (
    "project",
    "ingested",
    "rejected",
    "pool",
    "batches",
    "open tasks",
    "labels",
    "annotations",
    "ann./min",
    "α last",
    "budget",
    "cost",
    "ETA",
    "model acc.",
    "state",
)

WIDE = 150
"""Terminals at least this wide get a row per project; narrower ones a column per project (at
80 columns fifteen columns are cut to ``pr… in…``)."""


def _waiting(view: CampaignView, config: ProjectConfig | None, now: float) -> str:
    """The open batches waiting longer than the project's ``quality.assignment_timeout_seconds``
    (a half-done task held by one person in the shared project, or nobody left to take a task
    from an absent annotator), as `` (waiting 14m00s on b-3, over the 10m00s timeout)``."""
    timeout = config.quality.assignment_timeout_seconds if config else None
    if timeout is None:
        return ""
    late = sorted(
        ((now - b.created, b.batch_id) for b in view.open_batches if now - b.created > timeout),
        reverse=True,
    )
    if not late:
        return ""
    longest, batch_id = late[0]
    more = f" and {len(late) - 1} more" if len(late) > 1 else ""
    return f" (waiting {_eta(longest)} on {batch_id}{more}, over the {_eta(timeout)} timeout)"


def _row(view: CampaignView, config: ProjectConfig | None, now: float | None = None) -> list[str]:
    budget = config.budget if config else None
    max_labels = budget.max_labels if budget else None
    remaining = max(max_labels - view.labels_used, 0) if max_labels else None
    alpha = view.reports[-1].krippendorff_alpha if view.reports else None
    model = view.latest_model
    state = view.next_batch(config)
    cost = view.cost(budget.hourly_rate) if budget else None
    return [
        view.project,
        str(view.items_ingested),
        str(view.items_rejected),
        str(view.pool_size),
        str(len(view.batches)),
        str(view.open_tasks),
        str(view.labels_used),
        str(view.annotations_used),
        _fmt(view.throughput(), ".1f"),
        _fmt(alpha),
        f"{view.labels_used}/{max_labels}" if max_labels else "-",
        f"{cost:.2f} {budget.currency}" if cost is not None and budget else "-",
        _eta(view.eta_seconds(remaining)) if remaining else "-",
        _fmt(model.metrics.get("accuracy") if model else None, ".3f"),
        state
        + (f" ({view.dead_letters} dead letters)" if view.dead_letters else "")
        + _waiting(view, config, time.time() if now is None else now),
    ]


def render(
    views: dict[str, CampaignView],
    configs: dict[str, ProjectConfig | None],
    *,
    width: int = WIDE,
    now: float | None = None,
) -> Table | str:
    """The status of every project: a row each on a wide terminal, a column each on a narrow
    one; a sentence when there is no project at all."""
    if not views:
        return "no projects yet: `labelloop project apply FILE` configures one"
    rows = [_row(view, configs.get(name), now) for name, view in sorted(views.items())]
    if width >= WIDE:
        table = Table(title="labelloop status")
        for column in COLUMNS:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        return table
    table = Table(title="labelloop status", show_header=True)
    table.add_column("")
    for row in rows:
        table.add_column(row[0], overflow="fold")
    for index, column in enumerate(COLUMNS[1:], start=1):
        table.add_row(column, *(row[index] for row in rows))
    return table


async def _configs(bus: BusClient, names: list[str]) -> dict[str, ProjectConfig | None]:
    return {name: await bus.project(name) for name in names}


async def show_status(projects: list[str] | None, *, watch: bool, console: Console) -> None:
    import asyncio

    from rich.live import Live

    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop_console.campaign import CampaignWatcher

    async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
        watcher = CampaignWatcher(bus.nc, bus.ns, projects)
        await watcher.start()
        if not await watcher.caught_up():
            console.print("[yellow]the bus is slow to replay: the table may be incomplete[/]")
        configs: dict[str, Any] = await _configs(bus, list(watcher.views))
        if not watch:
            console.print(render(watcher.views, configs, width=console.width))
            await watcher.stop()
            return
        view = render(watcher.views, configs, width=console.width)
        with Live(view, console=console, refresh_per_second=2) as live:
            try:
                while True:
                    await asyncio.sleep(1.0)
                    missing = [n for n in watcher.views if n not in configs]
                    configs.update(await _configs(bus, missing))
                    live.update(render(watcher.views, configs, width=console.width))
            except (KeyboardInterrupt, asyncio.CancelledError):
                pass
        await watcher.stop()
