from __future__ import annotations

from pathlib import Path

import click

from lookalike.cli.common import build_model_options, db_option
from lookalike.models.pooling import POOLS


@click.command("serve")
@db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but loopback exposes every indexed image to the "
    "network, with no login.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-upload-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.01, 1024),
    help="Largest query image accepted, in megabytes (MiB).",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The weights file the collection was indexed with, if not the default.",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default=None,
    help="Pooling (default: the one the collection was indexed with).",
)
@click.option(
    "--adapter",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A feature adapter (default: the one the collection was indexed with).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level (info logs each request).",
)
def serve_command(
    db: Path | str | None,
    host: str,
    port: int,
    max_upload_mb: float,
    weights: Path | None,
    pool: str | None,
    adapter: Path | None,
    log_level: str,
) -> None:
    """Web app and REST API: search by dropping an image, see the look-alikes.

    Open http://127.0.0.1:8000/ in a browser; the API is documented at /docs.
    Needs the web extra: pip install 'lookalike[web]'.

    \b
    Examples:
      lookalike serve --db ./my-db
      lookalike serve --port 9000
      curl -F file=@photo.jpg -F k=5 http://127.0.0.1:8000/api/search
    """
    try:
        import uvicorn

        from lookalike.web.app import create_app
        from lookalike.web.guards import LOOPBACK_HOSTS, is_loopback
        from lookalike.web.uploads import UploadLimits
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the web app needs the 'web' extra ({exc.name} is missing): "
            "pip install 'lookalike[web]'"
        ) from None

    exposed = not is_loopback(host)
    if exposed:
        click.echo(
            f"warning: listening on {host}, not loopback: anyone who can reach this machine "
            "can search and download every image in the collection (there is no login)",
            err=True,
        )
    app = create_app(
        db,
        model_options=build_model_options(weights, pool),
        adapter=adapter,
        limits=UploadLimits(max_bytes=int(max_upload_mb * 1024 * 1024)),
        # Loopback: answer only to loopback names (stops DNS-rebinding pages).
        allowed_hosts=None if exposed else LOOPBACK_HOSTS,
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"lookalike: http://{shown}:{port}/  (REST API docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
