"""The ``labelloop`` command: projects, campaigns, dead letters here; the rest in ``commands``.

Heavy libraries (pandas, scikit-learn, FastStream) are imported by the command that needs them,
when it runs: ``labelloop --help`` loads none of them.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# typer reads the options' types when it builds the commands, for --help too: TaskType stays
# here, from the module of plain enums (labelloop.project would bring pydantic and YAML)
from labelloop.kinds import TaskType

__all__ = ["app", "main"]

app = typer.Typer(
    name="labelloop",
    help="Run a data-labeling loop: ingest, sample, annotate, QA, export, retrain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
project_app = typer.Typer(
    help="Create, validate and apply project configurations.", no_args_is_help=True
)
dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(dlq_app, name="dlq")

console = Console()
err_console = Console(stderr=True)


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


# ---------------------------------------------------------------------- embedded NATS


@app.command("nats")
def nats_command(
    port: Annotated[int, typer.Option(help="Client port")] = 4222,
    http_port: Annotated[int, typer.Option(help="Monitoring port")] = 8222,
    store_dir: Annotated[Path, typer.Option(help="JetStream store directory")] = Path(".nats"),
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Admit clients without the token (not advised)")
    ] = False,
) -> None:
    """Run the embedded nats-server with JetStream in the foreground (Ctrl-C stops it).

    Clients must present the token in STORE_DIR/token (created once, then reused, so services
    survive a server restart); STORE_DIR/env sets LABELLOOP_NATS_URL and
    LABELLOOP_NATS_TOKEN_FILE for a shell: `set -a; . .nats/env; set +a`."""
    from labelloop.natsserver import EmbeddedNats

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    # before anything starts: a signal during start-up stops the server, never the CLI alone
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    env_file = store_dir / "env"
    env_file.unlink(missing_ok=True)  # a previous run's: not a sign that this one is up
    token = None if no_auth else _token_in(store_dir)
    server = EmbeddedNats(port=port, http_port=http_port, store_dir=store_dir, token=token)
    server.start()
    console.print(
        f"nats-server running at [bold]{server.url}[/] (store {store_dir}), pid {server.pid}"
    )
    if token is None:
        console.print("[yellow]open server: any local process may publish on the bus[/]")
    else:
        console.print(f"clients present the token in {store_dir / 'token'}; in another shell:")
    console.print(f"  set -a; . {env_file}; set +a", markup=False)
    # last: whoever waits for the file finds the server up and everything above said
    lines = [f"LABELLOOP_NATS_URL={server.url}"]
    if token is not None:
        lines.append(f"LABELLOOP_NATS_TOKEN_FILE={(store_dir / 'token').resolve()}")
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    import time

    while not stop and server.pid is not None:
        time.sleep(0.5)
    server.stop()


def _token_in(store_dir: Path) -> str:
    """The server's token: read from STORE_DIR/token, or created there readable by its owner."""
    import os

    from labelloop.natsserver import new_token

    store_dir.mkdir(parents=True, exist_ok=True)
    path = store_dir / "token"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    token = new_token()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    return token


# ---------------------------------------------------------------------- the loop, kept running


@app.command("up")
def up_command(
    home: Annotated[Path, typer.Option(help="State: NATS store, logs, env file")] = Path(
        ".labelloop"
    ),
    backend: Annotated[
        str, typer.Option(help="simulated (a simulated crew) or label-studio (people)")
    ] = "simulated",
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Run in the background; `labelloop down` stops")
    ] = False,
    namespace: Annotated[str, typer.Option(help="Subject and bucket prefix")] = "labelloop",
    port: Annotated[int, typer.Option(help="NATS client port")] = 4222,
    http_port: Annotated[int, typer.Option(help="NATS monitoring port")] = 8222,
    bridge_port: Annotated[
        int, typer.Option(help="The bridge's port, where Label Studio posts its webhooks")
    ] = 8093,
    label_studio_env: Annotated[
        Path | None,
        typer.Option(help="Env file with the Label Studio URL and token (`make labelstudio`'s)"),
    ] = None,
) -> None:
    """Start the embedded NATS and the six services and keep them running (a service that exits
    is restarted) until Ctrl-C, or `labelloop down` with --detach. Shells and the CLI reach them
    with `set -a; . HOME/env; set +a`."""
    from labelloop_console.local import LocalOptions, UpFailed, run_up, start_detached

    if backend not in ("simulated", "label-studio"):
        err_console.print("backend is simulated or label-studio")
        raise typer.Exit(2)
    default_env = Path(".labelstudio/labelstudio.env")
    if label_studio_env is None and backend == "label-studio" and default_env.exists():
        label_studio_env = default_env
    options = LocalOptions(
        home=home.resolve(),
        backend=backend,
        namespace=namespace,
        port=port,
        http_port=http_port,
        bridge_port=bridge_port,
        label_studio_env=label_studio_env,
    )
    try:
        if detach:
            state = start_detached(options)
            console.print(
                f"labelloop is up in the background (pid {state['pid']}): nats"
                f" {state['nats_url']}, {len(state['services'])} services, backend {backend}"
            )
            console.print(f"set -a; . {home / 'env'}; set +a    # then: labelloop status")
            console.print(f"labelloop down --home {home}    # to stop it")
            return
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        options.home.mkdir(parents=True, exist_ok=True)
        token = _token_in(options.home / "nats")
        run_up(options, token, lambda line: console.print(line, markup=False), lambda: stop)
    except UpFailed as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None


@app.command("down")
def down_command(
    home: Annotated[Path, typer.Option(help="The state directory `labelloop up` used")] = Path(
        ".labelloop"
    ),
) -> None:
    """Stop what `labelloop up --detach` started: the services, then NATS (data is kept)."""
    from labelloop_console.local import UpFailed, down

    try:
        stopped = down(home)
    except UpFailed as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print("labelloop is down" if stopped else f"nothing is up in {home}")


# ---------------------------------------------------------------------- services


@app.command("run")
def run_command(
    service: Annotated[str, typer.Argument(help="ingester, sampler, annotation-bridge, ...")],
) -> None:
    """Run one service until SIGTERM (as `labelloop-service SERVICE` does in a container)."""
    from labelloop.services import service_spec

    try:
        spec = service_spec(service)
    except KeyError as exc:
        err_console.print(exc.args[0])
        raise typer.Exit(2) from None
    spec.build().run()


@app.command("secrets")
def secrets_command(
    directory: Annotated[Path, typer.Argument(help="Where to write them")] = Path("secrets"),
    route: Annotated[
        list[str] | None,
        typer.Option(help="A cluster node's route address (repeat; default: compose's three)"),
    ] = None,
) -> None:
    """Write the production NATS credentials for docker-compose.yml: a password file per user,
    the users with bcrypt hashes and route authentication for the nodes. Existing passwords are
    kept; rerun it after the permissions change (`make docs`)."""
    from labelloop_console.credentials import COMPOSE_ROUTES, write_credentials

    created = write_credentials(directory, tuple(route) if route else COMPOSE_ROUTES)
    kept = "" if created else " (every password existed and was kept)"
    console.print(
        f"wrote the NATS credentials into {directory}{kept}: {len(created)} new password files,"
        " nats/accounts.conf and nats/routes.conf for the nodes"
    )


@app.command("docs")
def docs_command(
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("docs/asyncapi"),
    readme: Annotated[
        Path | None, typer.Option(help="README whose event table to regenerate")
    ] = None,
    accounts: Annotated[
        Path | None, typer.Option(help="NATS accounts file to write the permissions into")
    ] = None,
) -> None:
    """Write the AsyncAPI specification of every service into OUT, the event routing table
    (who publishes, who consumes) beside it, and into README's table when asked; and the
    production NATS permissions derived from the code (ACCOUNTS)."""
    from faststream.specification import AsyncAPI

    from labelloop_console.routing import markdown, with_table

    out.mkdir(parents=True, exist_ok=True)
    table = markdown()
    events = out.parent / "events.md"
    events.write_text(
        "# Events: who publishes, who consumes\n\nGenerated by `make docs` from the services' "
        "handlers and specs.\n\n" + table,
        encoding="utf-8",
    )
    console.print(f"wrote {events}")
    if readme is not None:
        readme.write_text(with_table(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
        console.print(f"updated the event table of {readme}")
    if accounts is not None:
        from labelloop.settings import ServiceSettings
        from labelloop.streams import Namespace
        from labelloop_console.permissions import accounts_conf

        accounts.write_text(accounts_conf(Namespace(ServiceSettings().namespace)), "utf-8")
        console.print(f"wrote the NATS permissions into {accounts}")
    from labelloop.services import service_specs

    for name, spec in service_specs().items():
        service = spec.build()
        document = AsyncAPI(service.broker, title=f"labelloop {name}", schema_version="3.0.0")
        path = out / f"{name}.json"
        path.write_text(document.to_specification().to_json(), encoding="utf-8")
        console.print(f"wrote {path}")


# ---------------------------------------------------------------------- projects


@project_app.command("init")
def project_init(
    name: Annotated[str, typer.Argument(help="Project name (lowercase, digits, - and _)")],
    task_type: Annotated[TaskType, typer.Option(help="Task type")] = TaskType.TEXT_CLASSIFICATION,
    out: Annotated[Path | None, typer.Option(help="File to write (default NAME.yaml)")] = None,
) -> None:
    """Scaffold a commented project configuration and a guidelines file."""
    from labelloop.project import scaffold_project

    target = out or Path(f"{name}.yaml")
    if target.exists():
        err_console.print(f"{target} exists; not overwriting")
        raise typer.Exit(1)
    target.write_text(scaffold_project(name, task_type), encoding="utf-8")
    guidelines = target.parent / "guidelines.md"
    if not guidelines.exists():
        guidelines.write_text(
            f"# Labeling guidelines: {name}\n\nDescribe each class with examples and edge cases.\n",
            encoding="utf-8",
        )
    console.print(f"wrote {target} and {guidelines}; check it with `labelloop project validate`")


@project_app.command("validate")
def project_validate(
    file: Annotated[Path, typer.Argument(help="Project YAML")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the normalised configuration as JSON")
    ] = False,
) -> None:
    """Validate a project file: one line saying it is valid (or what is wrong, field by field)."""
    config = _load_or_exit(file)
    if as_json:
        typer.echo(config.model_dump_json(exclude={"guidelines_text"}, indent=2))
        return
    classes = len(config.labels.classes)
    fields = ", ".join(f.name for f in config.data_fields)
    typer.echo(
        f"{file}: valid: project {config.name} ({config.task_type.value}, {classes} classes,"
        f" data fields {fields}, {config.sampling.strategy.value} sampling,"
        f" consensus {config.quality.consensus})"
    )


@project_app.command("apply")
def project_apply(file: Annotated[Path, typer.Argument(help="Project YAML")]) -> None:
    """Store a project's configuration in NATS and announce it to the services."""
    from labelloop.client import COMMAND_WAIT_SECONDS, connect

    config = _load_or_exit(file)

    async def apply() -> int:
        async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
            return await bus.apply_project(config)

    revision = _run(apply())
    console.print(f"project [bold]{config.name}[/] applied (revision {revision})")


@project_app.command("show")
def project_show(name: Annotated[str, typer.Argument()]) -> None:
    """Print a project's stored configuration."""
    from labelloop.client import COMMAND_WAIT_SECONDS, connect

    async def show() -> str | None:
        async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
            config = await bus.project(name)
            return None if config is None else config.model_dump_json(exclude={"guidelines_text"})

    text = _run(show())
    if text is None:
        err_console.print(f"no project named {name!r}")
        raise typer.Exit(1)
    console.print_json(text)


def _load_or_exit(file: Path) -> Any:
    from labelloop.project import ProjectConfigError, load_project

    try:
        return load_project(file)
    except ProjectConfigError as exc:
        # as written: Rich markup would eat a pattern's [a-z0-9] from the message
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------- dead letters


@dlq_app.command("list")
def dlq_list(
    project: Annotated[str | None, typer.Option(help="Only this project")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List pending dead letters with their reasons."""
    from rich.table import Table

    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop.deadletters import list_dead_letters

    async def fetch() -> list[Any]:
        async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
            return await list_dead_letters(bus.js, bus.ns, limit=limit, project=project)

    letters = _run(fetch())
    if as_json:
        for item in letters:
            row = item.letter.model_dump(mode="json", exclude={"payload_b64"})
            print(json.dumps({"sequence": item.sequence, **row}))
        return
    table = Table("seq", "when", "project", "subject", "kind", "deliveries", "reason")
    for item in letters:
        dl = item.letter
        table.add_row(
            str(item.sequence),
            dl.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            dl.project,
            dl.original_subject,
            dl.kind,
            str(dl.deliveries),
            dl.reason[:120],
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    sequences: Annotated[list[int] | None, typer.Argument(help="Dead-letter sequences")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every pending dead letter")] = False,
) -> None:
    """Re-drive dead letters to their original subjects (after fixing the cause)."""
    from labelloop.client import COMMAND_WAIT_SECONDS, connect
    from labelloop.deadletters import ReplayRefused, list_dead_letters, replay_dead_letter

    if not sequences and not all_:
        err_console.print("name dead-letter sequences or pass --all")
        raise typer.Exit(2)

    async def replay() -> tuple[int, int]:
        async with connect(give_up_after=COMMAND_WAIT_SECONDS) as bus:
            targets = list(sequences or [])
            if all_:
                targets = [d.sequence for d in await list_dead_letters(bus.js, bus.ns, limit=10**6)]
            refused = 0
            for seq in targets:
                try:
                    letter = await replay_dead_letter(bus.js, bus.ns, seq)
                except ReplayRefused as exc:
                    err_console.print(str(exc), markup=False, highlight=False)
                    refused += 1
                    continue
                console.print(f"replayed {seq} -> {letter.original_subject}")
            return len(targets) - refused, refused

    replayed, refused = _run(replay())
    console.print(
        f"{replayed} dead letter(s) replayed" + (f", {refused} refused" if refused else "")
    )
    if refused:
        raise typer.Exit(1)


# ---------------------------------------------------------------------- campaign


@app.command("demo")
def demo_command(
    budget: Annotated[int, typer.Option(help="Label budget of the campaign")] = 400,
    backend: Annotated[
        str,
        typer.Option(
            help="simulated (a simulated crew) or label-studio (people: no random arm, 24 h)"
        ),
    ] = "simulated",
    random_arm: Annotated[
        bool,
        typer.Option(help="Run a random-sampling project beside it as the baseline (simulated)"),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the data split, sampling and crew")] = 20,
    runs_dir: Annotated[Path, typer.Option(help="Where runs/<run-id>/ goes")] = Path("runs"),
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds")] = 900.0,
    nats_url: Annotated[
        str | None, typer.Option(help="Use this NATS server instead of the embedded one")
    ] = None,
    max_model_lag: Annotated[
        int | None,
        typer.Option(help="Batches the choosing model may lag behind (the project's by default)"),
    ] = None,
    time_scale: Annotated[
        float | None,
        typer.Option(help="Simulated crew: wall seconds per second of lead time (0: at once)"),
    ] = None,
    project: Annotated[
        Path | None, typer.Option(help="Project file (default: examples/digits/project.yaml)")
    ] = None,
) -> None:
    """Run a whole active-learning campaign on scikit-learn's digits and summarise it."""
    from labelloop.project import load_project
    from labelloop_console.demo import (
        DemoOptions,
        demo_problems,
        load_demo_data,
        print_summary,
        run_demo,
    )
    from labelloop_console.processes import ServiceFailed

    if backend not in ("simulated", "label-studio"):
        err_console.print("backend is simulated or label-studio")
        raise typer.Exit(2)
    if backend == "label-studio":
        timeout = max(timeout, 24 * 3600.0)  # people take their time
        console.print(
            "with people (label-studio) the demo waits up to 24 h for the campaign and runs no"
            " random arm (people would label it too); the loop stops with the demo: `labelloop"
            " up --backend label-studio` keeps it running"
        )
    options = DemoOptions(
        budget=budget,
        backend=backend,
        random_arm=random_arm and backend == "simulated",
        seed=seed,
        runs_dir=runs_dir,
        timeout_seconds=timeout,
        stall_seconds=timeout if backend == "label-studio" else 120.0,
        nats_url=nats_url,
        max_model_lag=max_model_lag,
        time_scale=time_scale,
    )
    if project is not None:
        options.project_file = project
    try:  # before anything starts: a project the demo has no data for is one line, exit 2
        data = load_demo_data(load_project(options.project_file), seed, options.test_fraction)
    except (ValueError, FileNotFoundError) as exc:  # ProjectConfigError is a ValueError
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    try:
        summary = run_demo(options, data)
    except (ServiceFailed, TimeoutError) as exc:  # the services did not come up: say which
        err_console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    print_summary(summary)
    run_dir = runs_dir / summary["run_id"]
    console.print(f"wrote {run_dir / 'summary.json'} and {run_dir / 'report.html'}")
    problems = demo_problems(summary)
    for problem in problems:
        err_console.print(f"[red]{problem}[/]", highlight=False)
    if problems:
        raise typer.Exit(1)


@app.command("status")
def status_command(
    project: Annotated[list[str] | None, typer.Option(help="Only these projects")] = None,
    watch: Annotated[bool, typer.Option(help="Keep refreshing until Ctrl-C")] = False,
) -> None:
    """A live view per project: pool, open tasks, throughput, agreement, budget, ETA, model."""
    from labelloop_console.status import show_status

    _run(show_status(project, watch=watch, console=console))


# ---------------------------------------------------------------------- the rest


def _register_commands() -> None:
    from labelloop_console.commands import bridge, crew, datasets, ingest, quality, training

    for module in (ingest, crew, quality, datasets, training, bridge):
        module.register(app)


def main() -> None:
    _register_commands()
    try:
        app(prog_name="labelloop")
    except ConnectionError as exc:
        # raised by a command that used the bus, so labelloop.client is loaded by now
        from labelloop.client import Unreachable

        if not isinstance(exc, Unreachable):
            raise
        # every command that needs the bus: one line, not a traceback
        hint = ""
        if "no NATS server answered" in str(exc):
            hint = (
                "; start one with `labelloop up` (or `make nats`), or point LABELLOOP_NATS_URL"
                " at yours"
            )
        typer.echo(f"error: cannot reach NATS: {exc}{hint}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
