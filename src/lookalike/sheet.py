"""Contact sheets: each query beside its neighbours, with rank and score under each."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from lookalike.errors import ImageReadError
from lookalike.images import load_image

ImageRef = str | os.PathLike[str] | Image.Image
Row = tuple[ImageRef, Sequence[tuple[ImageRef, str]]]  # (query, [(neighbour, caption)])

CAPTION_H = 28
GAP = 6
QUERY_GAP = 18  # wider gap after the query column


def _thumb(ref: ImageRef, side: int) -> Image.Image:
    try:
        image = ref.convert("RGB") if isinstance(ref, Image.Image) else load_image(ref, side)
    except ImageReadError:
        image = Image.new("RGB", (side, side), (200, 60, 60))  # a missing file shows red
    # contain() also enlarges: a 28x28 image is visible in a 128 px tile.
    image = ImageOps.contain(image, (side, side))
    tile = Image.new("RGB", (side, side), (245, 245, 245))
    tile.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return tile


def _label(ref: ImageRef) -> str:
    return "query" if isinstance(ref, Image.Image) else f"query: {Path(ref).name}"


def contact_sheet(rows: Sequence[Row], thumb: int = 128) -> Image.Image:
    """One line per query: the query, a gap, then its neighbours with their captions."""
    font = ImageFont.load_default()
    columns = 1 + max((len(n) for _, n in rows), default=0)
    cell_w, cell_h = thumb + GAP, thumb + CAPTION_H
    width = GAP + columns * cell_w + QUERY_GAP
    height = GAP + max(len(rows), 1) * (cell_h + GAP)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (query, neighbours) in enumerate(rows):
        y = GAP + r * (cell_h + GAP)
        tiles = [(query, _label(query)), *neighbours]
        for c, (ref, caption) in enumerate(tiles):
            x = GAP + c * cell_w + (QUERY_GAP if c else 0)
            sheet.paste(_thumb(ref, thumb), (x, y))
            if c == 0:
                draw.rectangle(
                    (x - 2, y - 2, x + thumb + 1, y + thumb + 1), outline=(30, 90, 200), width=2
                )
            draw.text((x, y + thumb + 3), _fit(draw, caption, thumb, font), fill="black", font=font)
    return sheet


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    width: int,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> str:
    """Cut ``text`` with an ellipsis so it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
