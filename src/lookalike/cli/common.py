"""Options and output helpers shared by the CLI commands. The CLI only parses and formats;
the work happens in the library."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from lookalike.models.pooling import POOLS
from lookalike.paths import printable

F = TypeVar("F", bound=Callable[..., Any])


class DbParam(click.ParamType):
    """--db: a collection folder (a Path), or a Milvus URI kept as written (a str)."""

    name = "db"
    _folder = click.Path(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            from lookalike.backends.locations import is_uri

            if is_uri(value):
                return value
        return self._folder.convert(value, param, ctx)


def db_option(f: F) -> F:
    return click.option(
        "--db",
        type=DbParam(),
        envvar="LOOKALIKE_DB",
        default=None,
        help=(
            "Collection folder, or milvus://HOST:PORT/NAME, or milvus-lite:///path/file.db "
            "(env LOOKALIKE_DB; default: 'lookalike' in your data dir)."
        ),
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(f)


MODEL_HELP = (
    "Model name (see `lookalike models`); default: the collection's, or for a new one "
    "the default chosen for this machine (efficientnet-lite0-int8 on a CPU with VNNI/AMX, "
    "else efficientnet-lite0; `lookalike models` marks it)."
)


def model_options_with(model_help: str) -> Callable[[F], F]:
    """--model/--weights/--pool/--adapter, with the --model help the command needs."""

    def decorate(f: F) -> F:
        return _model_options(f, model_help)

    return decorate


def model_options(f: F) -> F:
    """--model/--weights/--pool/--adapter, as used by index and search."""
    return _model_options(f, MODEL_HELP)


def _model_options(f: F, model_help: str) -> F:
    f = click.option(
        "--adapter",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="A feature adapter made by `lookalike fit`.",
    )(f)
    f = click.option(
        "--pool",
        type=click.Choice(POOLS),
        default=None,
        help=(
            "Global pooling of the last feature map (default: the collection's; for a new "
            "one gem with the EfficientNet-Lite models, avg with timm models). gem-2stage "
            "(EfficientNet-Lite): GeM of the last block's map too, 1600-d for lite0. "
            "gem-grid: gem-2stage plus that map over a 3x3 grid, 4480-d for lite0, for "
            "`lookalike fit` on images with a fixed layout."
        ),
    )(f)
    f = click.option(
        "--weights",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="Load the model's weights from this file.",
    )(f)
    return click.option("--model", default=None, help=model_help)(f)


def build_model_options(weights: Path | None, pool: str | None) -> Any:
    """ModelOptions from the flags, or None when none was given: an existing collection
    then uses the options it was built with."""
    from lookalike.models import ModelOptions

    if weights is None and pool is None:
        return None
    return ModelOptions(weights=weights, pool=pool)


def emit_json(data: Any) -> None:
    click.echo(printable(json.dumps(data, indent=2, ensure_ascii=False)))


def emit_json_array(items: Iterable[Any]) -> None:
    """A JSON array written item by item, laid out as emit_json would: `search --all` on a
    million images never holds the whole listing in memory."""
    opened = False
    for item in items:
        body = printable(json.dumps(item, indent=2, ensure_ascii=False)).replace("\n", "\n  ")
        click.echo(("[\n  " if not opened else ",\n  ") + body, nl=False)
        opened = True
    click.echo("\n]" if opened else "[]")


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (rate, ETA) on stderr, only when stderr is a terminal."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=None, rate="")

        def update(done: int, total: int) -> None:
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 and done else ""
            progress.update(task, completed=done, total=total, rate=rate)

        yield update


def echo_index_note(col: Any) -> None:
    """The one line a search says when it had to replace or bypass a damaged index."""
    note = col.index_note
    if note:
        click.echo(f"note: {note}", err=True)
