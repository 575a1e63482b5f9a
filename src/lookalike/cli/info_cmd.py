from __future__ import annotations

from pathlib import Path

import click

from lookalike.cli.common import db_option, emit_json, json_option


@click.command("info")
@db_option
@json_option
def info_command(db: Path | None, as_json: bool) -> None:
    """What a collection holds: model, size on disk, skipped files, search index."""
    from lookalike.collection import Collection

    with Collection.open(db) as col:
        info = col.info()
    if as_json:
        emit_json(info)
        return
    click.echo(f"collection  {info['db']}")
    click.echo(f"model       {info['model']} ({info['dim']}-d)")
    if info.get("adapter"):
        click.echo(f"adapter     {info['adapter'].get('path')}")
    click.echo(f"images      {info['count']}")
    click.echo(f"on disk     {info['bytes'] / 1e6:.1f} MB")
    index = info["index"]
    params = ", ".join(f"{k}={v}" for k, v in index.items() if k != "kind")
    click.echo(f"index       {index['kind']} ({params})")
    if info["skipped"]:
        click.echo(f"skipped     {len(info['skipped'])} files:")
        for item in info["skipped"]:
            click.echo(f"  {item['path']}: {item['reason']}")
