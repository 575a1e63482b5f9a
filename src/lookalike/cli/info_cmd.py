from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lookalike.cli.common import db_option, emit_json, json_option


@click.command("info")
@db_option
@json_option
def info_command(db: Path | str | None, as_json: bool) -> None:
    """What a collection holds: model, size on disk, skipped files, search index."""
    from lookalike.collection import Collection
    from lookalike.models.runtime import precision_fields

    with Collection.open(db) as col:
        info = col.info()
    info.update(precision_fields(info))
    if as_json:
        emit_json(info)
        return
    click.echo(f"collection  {info['db']}")
    click.echo(f"model       {info['model']} ({info['dim']}-d)")
    click.echo(f"precision   {info['precision']}, run by {info['runtime']} here")
    pre = info["model_identity"].get("preprocessing") or {}
    if "pool" in pre:  # what a re-index into a new collection would change (README)
        recipe, resample = pre.get("recipe", "?"), pre.get("resample", "?")
        click.echo(f"features    {pre['pool']} pooling, recipe {recipe} ({resample})")
    if info.get("adapter"):
        click.echo(f"adapter     {info['adapter'].get('path')}")
    click.echo(f"images      {info['count']}")
    click.echo(f"on disk     {info['bytes'] / 1e6:.1f} MB")
    click.echo(f"index       {_index_line(info['index'])}")
    if info["skipped"]:
        click.echo(f"skipped     {len(info['skipped'])} files:")
        for item in info["skipped"]:
            click.echo(f"  {item['path']}: {item['reason']}")


# What the index line shows of IndexManager.describe(); --json has everything.
_TUNING_KEYS = ("M", "ef_search", "storage", "nlist", "m", "nbits", "nprobe", "shortlist")


def _index_line(index: dict[str, Any]) -> str:
    if not index.get("built", True):
        return f"{index['kind']} (not built yet)"
    parts = [index["kind"]]
    requested = index.get("requested_kind")
    if requested == "auto":
        parts[0] += " (chosen by auto)"
    elif requested not in (None, index["kind"]):
        parts[0] += f" (asked for {requested})"
    recall = index.get("recall_at_10")
    if recall is not None and index["kind"] != "exact":
        queries = index.get("recall_queries")
        line = f"recall@10 {recall:.3f}" + (f" on {queries} held-out" if queries else "")
        target = index.get("recall_target")
        if target is not None and "recall_target_met" in index:
            line += f" (target {target} {'met' if index['recall_target_met'] else 'MISSED'})"
        parts.append(line)
    params = [f"{k}={index[k]}" for k in _TUNING_KEYS if k in index]
    if params:
        parts.append(", ".join(params))
    if index.get("bytes"):
        parts.append(f"{index['bytes'] / 1e6:.1f} MB")
    if index.get("note"):
        parts.append(index["note"])
    if index.get("up_to_date") is False:
        parts.append("out of date: searches are exact until the next `lookalike index` run")
    return "; ".join(parts)
