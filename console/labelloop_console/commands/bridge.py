"""``labelloop bridge ...``: the annotation bridge's commands."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    bridge = typer.Typer(help="Annotation bridge: Label Studio projects and the simulated crew.")

    @bridge.command("label-config")
    def label_config(
        project_file: Path = typer.Argument(..., help="A labelloop project YAML file."),  # noqa: B008
    ) -> None:
        """Print the Label Studio labeling config (XML) generated for a project."""
        from labelloop.project import load_project
        from labelloop_bridge.domain.label_config import build_label_config

        typer.echo(build_label_config(load_project(project_file)))

    @bridge.command("instructions")
    def instructions(
        project_file: Path = typer.Argument(..., help="A labelloop project YAML file."),  # noqa: B008
    ) -> None:
        """Print the HTML instructions Label Studio shows, made from the project's guidelines."""
        from labelloop.project import load_project
        from labelloop_bridge.domain.label_config import guidelines_html

        typer.echo(guidelines_html(load_project(project_file).guidelines_text))

    @bridge.command("annotators")
    def annotators(
        project_file: Path = typer.Argument(..., help="A labelloop project YAML file."),  # noqa: B008
    ) -> None:
        """List who can annotate: Label Studio's users, with roles from the project's annotators:.

        Reads LABELLOOP_BRIDGE_LABEL_STUDIO_URL and LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN.
        """
        import asyncio

        import httpx

        from labelloop.project import load_project
        from labelloop_bridge.labelstudio import LabelStudioClient
        from labelloop_bridge.registry import AnnotatorRegistry
        from labelloop_bridge.settings import BridgeSettings

        config = load_project(project_file)
        settings = BridgeSettings()
        if settings.label_studio_token is None:
            raise typer.BadParameter("LABELLOOP_BRIDGE_LABEL_STUDIO_TOKEN is not set")
        token = settings.label_studio_token.get_secret_value()

        async def listing() -> None:
            http = httpx.AsyncClient(base_url=settings.label_studio_url, timeout=30.0)
            client = LabelStudioClient(http, token)
            try:
                for who in await AnnotatorRegistry(client).annotators(config.annotators):
                    user = "-" if who.ls_user_id is None else str(who.ls_user_id)
                    typer.echo(f"{who.annotator_id}\t{who.role}\tlabel-studio user {user}")
            finally:
                await client.aclose()

        asyncio.run(listing())

    app.add_typer(bridge, name="bridge")
