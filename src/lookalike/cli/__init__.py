"""The `lookalike` command. Each subcommand lives in its own module."""

from __future__ import annotations

import errno
import importlib
import os
import sqlite3
import sys
from typing import Any

import click

from lookalike import __version__

# (module, attribute) of each subcommand; a missing optional module just drops its command.
_COMMANDS = (
    ("lookalike.cli.index_cmd", "index_command"),
    ("lookalike.cli.search_cmd", "search_command"),
    ("lookalike.cli.duplicates_cmd", "duplicates_command"),
    ("lookalike.cli.info_cmd", "info_command"),
    ("lookalike.cli.models_cmd", "models_command"),
    ("lookalike.cli.eval_cmd", "eval_command"),
    ("lookalike.cli.fit_cmd", "fit_command"),
    ("lookalike.cli.serve_cmd", "serve_command"),
)


class LookalikeGroup(click.Group):
    """Turns library errors into one clear line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        from lookalike.errors import LookalikeError

        try:
            return super().invoke(ctx)
        except LookalikeError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # The reader went away (`| head`): nothing to tell it. Point stdout at devnull
            # so that flushing at exit does not raise again (Python's documented recipe).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:
            # The file system said no (a --db under a file, a full disk...): one line too.
            where = f"{exc.filename}: " if exc.filename else ""
            hint = ""
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                hint = "; free some space and run again (work committed so far is kept)"
            elif exc.errno in (errno.EROFS, errno.EACCES):
                hint = "; writing needs a writable folder (search and info work read-only)"
            raise click.ClickException(f"{where}{exc.strerror or exc}{hint}") from None
        except sqlite3.Error as exc:
            # Damage found after opening (SQLite reads pages lazily), or a full disk.
            raise click.ClickException(
                f"meta.sqlite of the collection: {exc}; free disk space if it is full, else "
                "restore the collection from a backup or index into a new --db folder"
            ) from None
        except KeyboardInterrupt:
            click.echo("interrupted: work committed so far is kept; run again to resume", err=True)
            sys.exit(130)


@click.group(cls=LookalikeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lookalike")
def cli() -> None:
    """Find the images that look most like a query image, over your own folders.

    \b
    Examples:
      lookalike index ~/Pictures            # embed new/changed images (incremental)
      lookalike search photo.jpg -k 5       # the 5 most similar indexed images
      lookalike duplicates --threshold 0.97 # groups of near-identical images
    """


for _module, _attr in _COMMANDS:
    try:
        cli.add_command(getattr(importlib.import_module(_module), _attr))
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    # A warning to a person (a fallback, a cache that cannot be written): one line, no
    # source line of ours under it.
    return f"lookalike: warning: {message}\n"


def _say_notes(stream: Any = None) -> None:
    """lookalike's INFO lines (a model prepared on first use) on stderr, one line each,
    when it is a terminal: a person waiting is told; scripts' stderr stays as it was."""
    import logging

    stream = sys.stderr if stream is None else stream
    if not stream.isatty():
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("lookalike: %(message)s"))
    logger = logging.getLogger("lookalike")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main() -> None:
    """The `lookalike` console script. It ends the process when the command is done; to run
    commands inside another program, call ``cli`` (a click group) instead."""
    import warnings

    warnings.formatwarning = _one_line_warning
    _say_notes()
    # Text output names files whose names may not be valid UTF-8: write their real bytes
    # (as ls does) rather than fail with UnicodeEncodeError.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    try:
        cli(prog_name="lookalike")
    except SystemExit as exc:
        _exit_without_teardown(exc)
        raise


def _exit_without_teardown(exc: SystemExit) -> None:
    """End the process without Python's teardown (freeing every module and extension:
    ~0.07 s a user waits for once the work is done, a twentieth of indexing 300 photos;
    BENCHMARKS.md). atexit handlers (Ray, Milvus Lite, temporary folders, logging) still
    run and output is flushed. Returns, for a normal exit, while other threads run."""
    import atexit
    import threading

    if threading.active_count() > 1:
        return  # a normal exit waits for them
    code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            status = status or 1
    os._exit(status)
