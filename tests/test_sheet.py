"""Contact sheets: each query beside its neighbours, where the layout says they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lookalike import sheet
from lookalike.images import load_image
from lookalike.sheet import CAPTION_H, GAP, QUERY_GAP, contact_sheet

THUMB = 96


def _expected_size(rows: int, neighbours: int, thumb: int = THUMB) -> tuple[int, int]:
    width = GAP + (1 + neighbours) * (thumb + GAP) + QUERY_GAP
    height = GAP + rows * (thumb + CAPTION_H + GAP)
    return width, height


def _tile(image: Image.Image, row: int, col: int, thumb: int = THUMB) -> np.ndarray:
    x = GAP + col * (thumb + GAP) + (QUERY_GAP if col else 0)
    y = GAP + row * (thumb + CAPTION_H + GAP)
    return np.asarray(image.crop((x, y, x + thumb, y + thumb))).astype(int)


def _thumbnail(path: Path, thumb: int = THUMB) -> np.ndarray:
    """The picture as it should appear in its tile: fitted and centred on light grey."""
    image = load_image(path)
    image.thumbnail((thumb, thumb))
    tile = Image.new("RGB", (thumb, thumb), (245, 245, 245))
    tile.paste(image, ((thumb - image.width) // 2, (thumb - image.height) // 2))
    return np.asarray(tile).astype(int)


def test_layout_and_tiles(photos: dict[str, Path], tmp_path: Path) -> None:
    rows = [
        (photos["chelsea"], [(photos["coffee"], "#1 0.912"), (photos["rocket"], "#2 0.800")]),
        (photos["china"], [(photos["flower"], "#1 0.700")]),
    ]
    image = contact_sheet(rows, thumb=THUMB)
    assert image.size == _expected_size(rows=2, neighbours=2)
    path = tmp_path / "sheet.png"
    image.save(path)
    with Image.open(path) as reread:
        assert reread.format == "PNG" and reread.size == image.size

    # Each tile shows its own picture (inside the query's frame) and no other.
    for r, (query, neighbours) in enumerate(rows):
        shown = [query, *(p for p, _ in neighbours)]
        for c, picture in enumerate(shown):
            got = _tile(image, r, c)[3:-3, 3:-3]  # the query frame overlaps the edge
            want = _thumbnail(picture)[3:-3, 3:-3]
            assert np.abs(got - want).mean() < 4, (r, c)
            other = _thumbnail(photos["camera"])[3:-3, 3:-3]
            assert np.abs(got - other).mean() > 20
    # A row with fewer neighbours leaves the rest blank.
    assert np.all(_tile(image, 1, 2) == 255)


def test_captions_are_drawn_under_each_tile(photos: dict[str, Path]) -> None:
    rows = [(photos["chelsea"], [(photos["coffee"], "#1 0.912")])]
    image = np.asarray(contact_sheet(rows, thumb=THUMB)).astype(int)
    top = GAP + THUMB + 2
    for c in range(2):
        x = GAP + c * (THUMB + GAP) + (QUERY_GAP if c else 0)
        band = image[top : top + CAPTION_H - 4, x : x + THUMB]
        assert (band.sum(axis=2) < 200).sum() > 20, c  # dark text pixels


def test_unreadable_neighbour_shows_red(photos: dict[str, Path], tmp_path: Path) -> None:
    rows = [(photos["chelsea"], [(tmp_path / "gone.jpg", "#1 0.5")])]
    tile = _tile(contact_sheet(rows, thumb=THUMB), 0, 1)
    assert np.all(tile == np.array([200, 60, 60]))


def test_pil_image_queries_and_no_rows() -> None:
    image = Image.new("RGB", (50, 80), (10, 200, 10))
    sheet_image = contact_sheet([(image, [])], thumb=THUMB)
    assert sheet_image.size == _expected_size(rows=1, neighbours=0)
    assert contact_sheet([], thumb=THUMB).size == _expected_size(rows=1, neighbours=0)


def test_long_captions_are_cut_to_fit() -> None:
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = ImageFont.load_default()
    text = "query: a-very-long-file-name-that-cannot-possibly-fit-in-a-thumbnail.jpg"
    cut = sheet._fit(draw, text, THUMB, font)
    assert cut.endswith("…") and text.startswith(cut[:-1])
    assert draw.textlength(cut, font=font) <= THUMB
    assert sheet._fit(draw, "#1 0.9", THUMB, font) == "#1 0.9"
