"""People in Label Studio through a real browser: Debian's Chromium driven by Playwright.

The six services run as processes against a real Label Studio 1.23 (the bridge on its webhook and
reconciliation). Annotators sign up with the organization's invite link and log in through Label
Studio's own pages, open the project whose title carries their id, and label in its queue by
clicking the choices and Submit, Skip or Update, or delete an answer from its menu; nothing is
written through the API on their behalf. Each project file names its annotators
(``annotators:``), so every task reaches exactly the people the bridge assigned it to, each in a
Label Studio project of their own (blind overlap).

What each test checks is what README.md ("Labeling with people: Label Studio") documents:

* labels given in the browser reach a dataset version, with the annotators' configured ids;
* a skip counts as that annotator's answer (the batch does not wait for it), is published as a
  cancelled annotation, and the item, left without a usable answer, goes to expert review;
* an update before the batch is scored supersedes the first answer; a deletion before it stops
  counting, and the task is answered again;
* an update or a deletion after the batch was scored is published on the bus, QA re-scores the
  round, and a new dataset version (``v<n>-r<k>``) holds the updated label, or no longer holds
  the item whose only answer was deleted (and Label Studio puts a deleted task back in its
  annotator's queue).

Skipped without Playwright (``pip install playwright``; no browser download: the system Chromium
is used) or without Chromium at ``LABELLOOP_CHROMIUM`` (default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from reliability_support import (
    TICKET_CLASSES,
    TICKET_WORDS,
    poll,
    read_dataset,
    ticket_items,
    ticket_project,
)

from labelloop.client import BusClient, connect
from labelloop.events import (
    Annotation,
    AnnotationsSubmitted,
    BatchCompleted,
    BatchCreated,
    DatasetExported,
    ItemsSubmitted,
    LabelsReady,
    deterministic_id,
)
from labelloop.natsserver import EmbeddedNats, free_port
from labelloop.project import parse_project
from labelloop.settings import ServiceSettings
from labelloop.testing import EventCollector
from labelloop_console.campaign import latest_dataset
from labelloop_console.processes import Supervisor

playwright = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install playwright)"
)

CHROMIUM = Path(os.environ.get("LABELLOOP_CHROMIUM", "/usr/bin/chromium"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.labelstudio,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(900),
]

PASSWORD = secrets.token_urlsafe(16)
"""The annotators' password, made for this run (they type it into Label Studio's login page)."""
SECRET = secrets.token_urlsafe(16)
"""The bridge's webhook secret for this run."""
DEADLINE = 180.0
"""Seconds any one condition may take on a shared 2-core machine (never a timed assertion)."""


def _email(who: str) -> str:
    return f"{who}-browser@example.com"


def _truth(text: str) -> str:
    """The class a careful annotator gives a ticket (its phrase says it)."""
    return next(c for c, phrases in TICKET_WORDS.items() if any(p in text for p in phrases))


def _other(label: str) -> str:
    return next(c for c in TICKET_CLASSES if c != label)


# --------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class Loop:
    url: str
    token: str
    nats_url: str
    namespace: str
    exports: Path


@pytest.fixture(scope="module")
def loop(
    label_studio: Any, nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loop]:
    """The six services as processes, the bridge on the real Label Studio, for this module."""
    namespace = f"br{uuid.uuid4().hex[:10]}"
    work = tmp_path_factory.mktemp("browser")
    port = free_port()
    env = {
        "LABELLOOP_BRIDGE_BACKEND": "label-studio",
        "LABELLOOP_BRIDGE_LABEL_STUDIO_URL": label_studio.url,
        "LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN": label_studio.token,
        "LABELLOOP_BRIDGE_WEBHOOK_SECRET": SECRET,
        "LABELLOOP_BRIDGE_RECONCILE_INTERVAL_SECONDS": "3",
        "LABELLOOP_EXPORTER_EXPORT_DIR": str(work / "exports"),
    }
    supervisor = Supervisor(nats_server.url, namespace, work, env=env)
    with supervisor:
        for service in ("ingester", "sampler", "qa-scorer", "exporter", "trainer"):
            supervisor.start(service)
        bridge = supervisor.start(
            "annotation-bridge",
            extra_env={
                "LABELLOOP_BRIDGE_HTTP_PORT": str(port),
                "LABELLOOP_BRIDGE_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhooks/label-studio",
            },
        )
        bridge.port = port
        supervisor.wait_ready(120)
        yield Loop(label_studio.url, label_studio.token, nats_server.url, namespace, work)
        for proc in supervisor.processes:
            log = proc.log_path.read_text(errors="replace")
            assert label_studio.token not in log, f"{proc.name} logged the Label Studio token"
            assert SECRET not in log, f"{proc.name} logged the webhook secret"
            assert PASSWORD not in log, f"{proc.name} logged an annotator's password"


# --------------------------------------------------------------------------- one campaign


@dataclass
class Run:
    loop: Loop
    project: str
    bus: BusClient
    admin: httpx.AsyncClient
    browser: Any
    batch: BatchCreated
    projects: dict[str, int]
    """Annotator -> their own Label Studio project."""
    annotations: EventCollector
    completions: EventCollector
    datasets: EventCollector
    batches: EventCollector
    pages: list[Any] = field(default_factory=list)

    @property
    def texts(self) -> dict[str, str]:
        """Item id -> the ticket's text."""
        return {t.item_id: str(t.data["text"]) for t in self.batch.tasks}

    def item_of(self, text: str) -> str:
        return next(item for item, shown in self.texts.items() if shown == text)

    async def tasks_of(self, who: str) -> list[dict[str, Any]]:
        """The tasks in ``who``'s project, as Label Studio holds them (read as the admin)."""
        response = await self.admin.get(
            "/api/tasks",
            params={"project": self.projects[who], "page_size": 1000, "fields": "all"},
        )
        response.raise_for_status()
        return list(response.json()["tasks"])

    def published(self, item: str) -> list[Annotation]:
        return [
            a
            for e in self.annotations.events
            if e.project == self.project
            for a in e.annotations
            if a.item_id == item
        ]

    def completed(self, kind: str = "labeling") -> list[BatchCompleted]:
        return [e for e in self.completions.events if e.project == self.project and e.kind == kind]

    async def review_project(self) -> int | None:
        """The review project, once it holds a task (read as the admin)."""
        marker = f"[labelloop:{self.loop.namespace}/{self.project}/review]"
        found = (await self.admin.get("/api/projects", params={"page_size": 1000})).json()
        for project in found["results"]:
            if marker in (project["description"] or "") and project.get("task_number"):
                return int(project["id"])
        return None

    def versions(self) -> list[DatasetExported]:
        return [e for e in self.datasets.events if e.project == self.project]

    async def login(self, who: str) -> Any:
        """A fresh browser for ``who``, logged in through Label Studio's login page."""
        context = await self.browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        await page.goto(f"{self.loop.url}/user/login/")
        await page.fill("input[name=email]", _email(who))
        await page.fill("input[name=password]", PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(lambda url: "/user/login" not in url, timeout=DEADLINE * 1000)
        self.pages.append(page)
        return page


async def _sign_up(browser: Any, admin: httpx.AsyncClient, url: str, team: Sequence[str]) -> None:
    """Each annotator signs up through the organization's invite link (once per Label Studio)."""
    existing = {u["email"] for u in (await admin.get("/api/users/")).json()}
    invite = (await admin.get("/api/invite")).json()["invite_url"]
    for who in team:
        if _email(who) in existing:
            continue
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(f"{url}{invite}")
        await page.fill("input[name=email]", _email(who))
        await page.fill("input[name=password]", PASSWORD)
        await page.get_by_role("button", name="Create Account").click()
        await page.wait_for_url(lambda u: "/user/signup" not in u, timeout=DEADLINE * 1000)
        await context.close()


@contextlib.asynccontextmanager
async def campaign(
    loop: Loop,
    project: str,
    team: Sequence[str],
    *,
    n_items: int,
    overlap: float = 0.0,
    experts: Sequence[str] = (),
) -> AsyncIterator[Run]:
    """A project whose ``annotators:`` are ``team`` (and ``experts``), ``n_items`` tickets in
    one batch (the budget is the pool), and the batch in Label Studio: each annotator's project
    holds their tasks."""
    settings = ServiceSettings(nats_url=loop.nats_url, namespace=loop.namespace)
    config = ticket_project(project, f"Tickets {project}", n_items)
    config["quality"] = {
        "overlap_fraction": overlap,
        "annotators_per_overlapped_item": 2,
        "gold_fraction": 0.0,
    }
    config["sampling"] = {"strategy": "random", "batch_size": n_items, "seed": 3}
    config["annotators"] = [{"id": who, "email": _email(who)} for who in team] + [
        {"id": who, "email": _email(who), "role": "expert"} for who in experts
    ]
    async with (
        connect(settings) as bus,
        httpx.AsyncClient(
            base_url=loop.url, headers={"Authorization": f"Token {loop.token}"}, timeout=30.0
        ) as admin,
        EventCollector(loop.nats_url, loop.namespace, AnnotationsSubmitted) as annotations,
        EventCollector(loop.nats_url, loop.namespace, BatchCreated) as batches,
        EventCollector(loop.nats_url, loop.namespace, BatchCompleted) as completions,
        EventCollector(loop.nats_url, loop.namespace, DatasetExported) as datasets,
        playwright.async_playwright() as driver,
    ):
        # --no-sandbox: CI and these machines run the tests as root
        browser = await driver.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            await _sign_up(browser, admin, loop.url, [*team, *experts])
            await bus.apply_project(parse_project(config))
            await bus.publish(
                ItemsSubmitted(
                    event_id=deterministic_id("browser", loop.namespace, project),
                    project=project,
                    items=ticket_items(n_items),
                )
            )

            async def labeling_batch() -> BatchCreated | None:
                return next(
                    (e for e in batches.events if e.project == project and e.kind == "labeling"),
                    None,
                )

            batch = await poll(labeling_batch, timeout=DEADLINE, what=f"a batch of {project}")
            wanted = sum(min(t.annotations_required, len(team)) for t in batch.tasks)

            async def imported() -> dict[str, int] | None:
                found = (await admin.get("/api/projects", params={"page_size": 1000})).json()
                mine = {}
                for who in team:
                    marker = f"[labelloop:{loop.namespace}/{project}/labeling/{who}]"
                    ids = [p for p in found["results"] if marker in (p["description"] or "")]
                    if ids:
                        mine[who] = int(ids[0]["id"])
                held = [p for p in found["results"] if p["id"] in mine.values()]
                total = sum(int(p.get("task_number") or 0) for p in held)
                return mine if total == wanted and len(mine) == len(team) else None

            projects = await poll(imported, timeout=DEADLINE, what=f"{project} in Label Studio")
            yield Run(
                loop,
                project,
                bus,
                admin,
                browser,
                batch,
                projects,
                annotations,
                completions,
                datasets,
                batches,
            )
        finally:
            await browser.close()


# --------------------------------------------------------------------------- in the browser

_SHOWN = """() => {
  if (document.body.innerText.includes('No More Tasks Left in Queue')) return '';
  const line = document.querySelector('.lsf-richtext__line');
  return line ? line.innerText : null;
}"""


async def _shown(page: Any, previous: str | None = None) -> str:
    """The ticket Label Studio's queue shows now ('' once the queue is empty), once it is no
    longer ``previous``."""
    handle = await page.wait_for_function(
        f"prev => {{ const s = ({_SHOWN})(); return s !== null && s !== prev ? [s] : null; }}",
        arg=previous,
        timeout=DEADLINE * 1000,
    )
    value = await handle.json_value()
    return str(value[0])


async def _choose(page: Any, label: str) -> None:
    await page.locator(f'.lsf-choices input[name="{label}"]').click()


async def _submit(page: Any, label: str) -> None:
    await _choose(page, label)
    await page.get_by_role("button", name="Submit current annotation").click()


async def _skip(page: Any, label: str) -> None:
    await page.get_by_role("button", name="skip-task").click()


Act = Callable[[Any, str], Awaitable[None]]


async def label_queue(
    run: Run,
    page: Any,
    who: str,
    act: Callable[[str], tuple[Act, str]] | None = None,
    *,
    from_data_manager: bool = False,
) -> list[str]:
    """Work through ``who``'s queue, each ticket as ``act`` says (default: its true class,
    submitted); the tickets shown, in order. ``from_data_manager``: the page is at the project's
    Data Manager, and the queue is opened with its *Label All Tasks* button."""
    if from_data_manager:
        await page.get_by_text("Label All Tasks").first.click()
    else:
        await open_queue(run, page, who)
    seen: list[str] = []
    text = await _shown(page)
    while text:
        seen.append(text)
        how, label = act(text) if act else (_submit, _truth(text))
        await how(page, label)
        text = await _shown(page, text)
    return seen


async def open_queue(run: Run, page: Any, who: str) -> str:
    """``who``'s queue (*Label All Tasks*); the ticket it shows first ('' when empty)."""
    await page.goto(f"{run.loop.url}/projects/{run.projects[who]}/data?labeling=1")
    return await _shown(page)


async def open_task(run: Run, page: Any, who: str, text: str) -> None:
    """Open a ticket from the Data Manager of ``who``'s project (its row, clicked)."""
    await page.goto(f"{run.loop.url}/projects/{run.projects[who]}/data")
    await page.locator(".lsf-table-row", has_text=text).first.click()
    await page.locator(".lsf-richtext__line", has_text=text).wait_for(timeout=DEADLINE * 1000)


async def update_answer(run: Run, page: Any, who: str, text: str, label: str) -> None:
    await open_task(run, page, who, text)
    await _choose(page, label)
    await page.get_by_test_id("bottombar-update-button").click()


async def delete_answer(run: Run, page: Any, who: str, text: str) -> None:
    await open_task(run, page, who, text)
    await page.locator(".lsf-annotation-button__trigger").first.click()
    await page.get_by_text("Delete Annotation").first.click()
    await page.get_by_test_id("dialog-ok-button").click()


# --------------------------------------------------------------------------- the tests


async def test_annotators_label_only_their_tasks_blind_and_the_labels_reach_a_dataset(
    loop: Loop,
) -> None:
    team = ("amy", "ben")
    async with campaign(loop, "br-main", team, n_items=4, overlap=0.5) as run:
        overlapped = {run.texts[t.item_id] for t in run.batch.tasks if t.annotations_required > 1}
        assert overlapped, "the sampler overlapped part of the batch"

        amy = await run.login("amy")
        # the project list shows amy the project that carries her id; she opens it from there
        await amy.goto(f"{loop.url}/projects/")
        await amy.get_by_text("Tickets br-main · amy · ", exact=False).first.click()
        await amy.get_by_text("Label All Tasks").first.wait_for(timeout=DEADLINE * 1000)
        seen = {"amy": await label_queue(run, amy, "amy", from_data_manager=True)}

        # ben opens a task amy already answered: his project shows none of her answers
        ben = await run.login("ben")
        shared = sorted(overlapped)[0]
        await open_task(run, ben, "ben", shared)
        # the annotation bar is drawn (it lists every annotation of the task in a shared project)
        await ben.get_by_role("button", name="Create an annotation").wait_for(
            timeout=DEADLINE * 1000
        )
        authors = await ben.locator(".lsf-annotation-button__name").all_inner_texts()
        assert _email("amy") not in authors
        seen["ben"] = await label_queue(run, ben, "ben")

        # each saw exactly the tasks assigned to them: every overlapped ticket both, every
        # other ticket one of them, nothing twice, and no ticket outside the batch
        for who in team:
            held = {t["data"]["text"] for t in await run.tasks_of(who)}
            assert sorted(seen[who]) == sorted(held), who
        assert set(seen["amy"]) & set(seen["ben"]) == overlapped
        assert sorted(set(seen["amy"]) | set(seen["ben"])) == sorted(run.texts.values())

        versions = await poll(
            lambda: _async(run.versions()), timeout=DEADLINE, what="a dataset version"
        )
        rows = {r["item_id"]: r for r in read_dataset(versions[-1].path)}
        assert set(rows) == set(run.texts)
        for item, text in run.texts.items():
            assert rows[item]["label"] == _truth(text)
            expected = ["amy", "ben"] if text in overlapped else None
            if expected:
                assert rows[item]["annotators"] == expected
                assert rows[item]["n_annotations"] == 2
            else:
                assert len(rows[item]["annotators"]) == 1
                assert rows[item]["annotators"][0] in team


async def test_a_skip_counts_as_an_answer_and_sends_the_item_to_an_expert(loop: Loop) -> None:
    async with campaign(loop, "br-skip", ("amy",), n_items=2, experts=("drx",)) as run:
        page = await run.login("amy")
        skipped: list[str] = []

        def act(text: str) -> tuple[Act, str]:
            if not skipped:
                skipped.append(text)
                return _skip, ""
            return _submit, _truth(text)

        seen = await label_queue(run, page, "amy", act)
        assert len(seen) == 2
        item = run.item_of(skipped[0])
        (done,) = await poll(lambda: _async(run.completed()), timeout=DEADLINE, what="completion")
        (skip,) = [a for a in done.annotations if a.item_id == item]
        assert (skip.annotator_id, skip.cancelled, skip.value) == ("amy", True, None)

        def review() -> list[BatchCreated]:
            return [
                e for e in run.batches.events if e.project == run.project and e.kind == "review"
            ]

        (reviewed,) = await poll(lambda: _async(review()), timeout=DEADLINE, what="a review")
        assert [t.item_id for t in reviewed.tasks] == [item]
        # the round's labels wait for the expert, who answers in the review project
        assert not run.versions()
        run.projects["drx"] = await poll(run.review_project, timeout=DEADLINE, what="review task")
        expert = await run.login("drx")
        assert await label_queue(run, expert, "drx") == skipped
        versions = await poll(lambda: _async(run.versions()), timeout=DEADLINE, what="a dataset")
        rows = {r["item_id"]: r for r in read_dataset(versions[-1].path)}
        assert set(rows) == set(run.texts)
        assert (rows[item]["label"], rows[item]["reviewed"]) == (_truth(skipped[0]), True)
        assert rows[item]["annotators"] == ["drx"]


async def test_an_update_supersedes_before_scoring_and_is_published_after(loop: Loop) -> None:
    async with campaign(loop, "br-update", ("amy",), n_items=2) as run:
        page = await run.login("amy")
        # amy answers the first ticket wrongly, then corrects it while the batch is still open
        shown = await open_queue(run, page, "amy")
        await _submit(page, _other(_truth(shown)))
        wrong = run.item_of(shown)
        await poll(lambda: _async(run.published(wrong)), timeout=DEADLINE, what="the first answer")
        await update_answer(run, page, "amy", shown, _truth(shown))
        await poll(
            lambda: _async(len({a.updated_at for a in run.published(wrong)}) >= 2),
            timeout=DEADLINE,
            what="the update published",
        )
        assert not run.completed()
        await label_queue(run, page, "amy")
        (done,) = await poll(lambda: _async(run.completed()), timeout=DEADLINE, what="completion")
        assert {a.item_id: a.value for a in done.annotations} == {
            item: _truth(text) for item, text in run.texts.items()
        }
        await poll(lambda: _async(run.versions()), timeout=DEADLINE, what="a dataset version")
        await _settled(run)
        assert _labels(run) == {item: _truth(text) for item, text in run.texts.items()}

        # after scoring: the update is published (what QA makes of it: see the module docstring)
        (other,) = set(run.texts.values()) - {shown}
        before = len(run.published(run.item_of(other)))
        await update_answer(run, page, "amy", other, _other(_truth(other)))
        changed = await poll(
            lambda: _async(run.published(run.item_of(other))[before:]),
            timeout=DEADLINE,
            what="the late update published",
        )
        assert changed[-1].value == _other(_truth(other))
        late = {**_truths(run), run.item_of(other): _other(_truth(other))}
        await poll(
            lambda: _async(_labels(run) == late),
            timeout=DEADLINE,
            what="a dataset version with the late update",
        )
        assert "-r" in _latest(run).version  # a rewrite of the scored round's version


async def test_a_deletion_stops_counting_before_scoring_and_is_published_after(
    loop: Loop,
) -> None:
    async with campaign(loop, "br-delete", ("amy",), n_items=2) as run:
        page = await run.login("amy")
        shown = await open_queue(run, page, "amy")
        item = run.item_of(shown)
        await _submit(page, _other(_truth(shown)))
        await poll(lambda: _async(run.published(item)), timeout=DEADLINE, what="the answer")
        await delete_answer(run, page, "amy", shown)
        await poll(
            lambda: _async(any(a.deleted for a in run.published(item))),
            timeout=DEADLINE,
            what="the deletion published",
        )
        assert not run.completed()
        # Label Studio puts the task back in amy's queue: she answers it again, and the other
        again = await label_queue(run, page, "amy")
        assert sorted(again) == sorted(run.texts.values())
        (done,) = await poll(lambda: _async(run.completed()), timeout=DEADLINE, what="completion")
        assert {a.item_id: a.value for a in done.annotations if not a.deleted} == {
            i: _truth(t) for i, t in run.texts.items()
        }
        await poll(lambda: _async(run.versions()), timeout=DEADLINE, what="a dataset version")
        await _settled(run)
        assert _labels(run) == {item: _truth(text) for item, text in run.texts.items()}

        # after scoring: the deletion is published, and Label Studio queues the task for amy
        # again (what QA makes of it: see the module docstring)
        await delete_answer(run, page, "amy", shown)
        await poll(
            lambda: _async(sum(a.deleted for a in run.published(item)) >= 2),
            timeout=DEADLINE,
            what="the late deletion published",
        )
        await poll(
            lambda: _async(item not in _labels(run)),
            timeout=DEADLINE,
            what="a dataset version without the item whose only answer was deleted",
        )
        assert "-r" in _latest(run).version
        assert _labels(run) == {i: label for i, label in _truths(run).items() if i != item}
        assert await open_queue(run, page, "amy") == shown


# --------------------------------------------------------------------------- helpers


async def _async(value: Any) -> Any:
    return value


def _latest(run: Run) -> DatasetExported:
    return latest_dataset(run.versions())


def _labels(run: Run) -> dict[str, Any]:
    """Item -> label in the project's latest dataset version."""
    return {r["item_id"]: r["label"] for r in read_dataset(_latest(run).path)}


def _truths(run: Run) -> dict[str, Any]:
    return {item: _truth(text) for item, text in run.texts.items()}


async def _settled(run: Run) -> None:
    """Every service has finished with what the bus holds: nothing more will follow from it."""

    async def idle() -> bool:
        # in the order things flow, so that nothing is published behind a backlog read as empty
        pending = [
            await run.bus.backlog("sampler", AnnotationsSubmitted),
            await run.bus.backlog("qa-scorer", AnnotationsSubmitted),
            await run.bus.backlog("qa-scorer", BatchCompleted),
            await run.bus.backlog("exporter", LabelsReady),
        ]
        return not any(pending)

    await poll(idle, timeout=DEADLINE, what="the services caught up")
