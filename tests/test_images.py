"""Reading image files: by content, EXIF orientation, every mode to RGB, bad files refused."""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from lookalike.errors import ImageReadError
from lookalike.images import load_image, scan


def _raw(path: Path) -> np.ndarray:
    """Pixels as stored, with no orientation applied (what Pillow decodes)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


# ----- by content, not by extension ------------------------------------------------------


def test_png_named_jpg_is_read_as_png(tmp_path: Path, photo_arrays: dict[str, np.ndarray]) -> None:
    arr = photo_arrays["astronaut"]
    path = tmp_path / "really-a-png.jpg"
    Image.fromarray(arr).save(path, format="PNG")
    image = load_image(path)
    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), arr)  # lossless: read as PNG, not JPEG


@pytest.mark.parametrize("name", ["photo.svg", "photo", "photo.txt.bak"])
def test_jpeg_with_a_wrong_or_no_extension(
    tmp_path: Path, photos: dict[str, Path], name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(photos["chelsea"].read_bytes())
    image = load_image(path)
    assert np.array_equal(np.asarray(image), _raw(photos["chelsea"]))
    found = scan([tmp_path])
    assert path.absolute() in found.files


# ----- EXIF orientation ------------------------------------------------------------------

ORIENTATIONS = {
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # stored rotated: turn 90 degrees clockwise to view
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(
    tmp_path: Path, photo_arrays: dict[str, np.ndarray], orientation: int
) -> None:
    arr = photo_arrays["coffee"][:200, :320]  # not square, so a rotation changes the size
    path = tmp_path / f"oriented-{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, quality=95, exif=exif.tobytes())

    loaded = np.asarray(load_image(path))
    expected = ORIENTATIONS[orientation](_raw(path))
    assert loaded.shape == expected.shape
    assert np.array_equal(loaded, expected)
    if orientation in (6, 8):
        assert loaded.shape[:2] == (320, 200)


def test_orientation_marker_pixel(tmp_path: Path) -> None:
    """Independent of Pillow's transpose: a red corner ends up where a viewer shows it."""
    arr = np.zeros((60, 100, 3), np.uint8)
    arr[:, :] = (0, 0, 255)
    arr[:20, :20] = (255, 0, 0)  # stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "marker.jpg"
    Image.fromarray(arr).save(path, quality=100, exif=exif.tobytes())
    loaded = np.asarray(load_image(path)).astype(int)
    assert loaded.shape == (100, 60, 3)
    assert loaded[5, -5, 0] > 200 and loaded[5, -5, 2] < 60  # now top-right: red
    assert loaded[5, 5, 2] > 200  # top-left is blue


# ----- modes -> RGB -----------------------------------------------------------------------


def _ramp(h: int = 32, w: int = 64, top: float = 255) -> np.ndarray:
    return np.tile(np.linspace(0, top, w), (h, 1))


def test_mode_L(tmp_path: Path) -> None:
    grey = _ramp().astype(np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    out = np.asarray(load_image(path))
    assert out.shape == (32, 64, 3)
    for channel in range(3):
        assert np.array_equal(out[..., channel], grey)


def test_mode_P(tmp_path: Path, photo_arrays: dict[str, np.ndarray]) -> None:
    image = Image.fromarray(photo_arrays["rocket"]).convert("P", palette=Image.Palette.ADAPTIVE)
    path = tmp_path / "palette.png"
    image.save(path)
    out = load_image(path)
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(image.convert("RGB")))


def test_mode_P_with_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * (254 * 3))
    image.paste(0, (0, 0, 20, 30))  # left half: palette index 0 = transparent
    path = tmp_path / "transparent.png"
    image.save(path, transparency=0)
    out = np.asarray(load_image(path))
    assert tuple(out[5, 5]) == (255, 255, 255)
    assert tuple(out[5, 30]) == (200, 30, 30)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(tmp_path: Path, mode: str) -> None:
    image = Image.new(mode, (40, 30), (90, 255) if mode == "LA" else (10, 120, 230, 255))
    clear = (0, 0) if mode == "LA" else (0, 0, 0, 0)
    for x in range(20):
        for y in range(30):
            image.putpixel((x, y), clear)
    path = tmp_path / f"alpha-{mode}.png"
    image.save(path)
    out = np.asarray(load_image(path))
    assert tuple(out[10, 5]) == (255, 255, 255)  # fully transparent black -> white
    assert tuple(out[10, 30]) == ((90, 90, 90) if mode == "LA" else (10, 120, 230))


def test_half_transparent_pixel_is_blended_with_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    path = tmp_path / "half.png"
    image.save(path)
    out = np.asarray(load_image(path)).astype(int)
    assert np.all(np.abs(out - 127) <= 2)


@pytest.mark.parametrize(
    ("mode", "top", "fmt"),
    [("I;16", 65535, "PNG"), ("I", 1_000_000, "TIFF"), ("F", 1.0, "TIFF")],
)
def test_high_bit_depth_grey_keeps_its_contrast(
    tmp_path: Path, mode: str, top: float, fmt: str
) -> None:
    ramp = _ramp(top=top)
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(ramp.astype(dtype), mode if mode != "I;16" else None)
    if mode == "I;16":
        assert image.mode == "I;16"
    path = tmp_path / f"deep.{fmt.lower()}"
    image.save(path, format=fmt)
    out = np.asarray(load_image(path)).astype(int)
    assert out.shape == (32, 64, 3)
    row = out[0, :, 0]
    # The full range maps onto 0..255, in order (not clipped to black or white).
    assert row[0] <= 1 and row[-1] >= 254
    assert np.all(np.diff(row) >= 0)
    assert np.array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk(tmp_path: Path, fmt: str) -> None:
    image = Image.new("CMYK", (30, 20), (255, 0, 0, 0))  # pure cyan
    image.paste((0, 0, 0, 0), (15, 0, 30, 20))  # right half: no ink = white
    path = tmp_path / f"cmyk.{fmt.lower()}"
    image.save(path, format=fmt, quality=100)
    out = np.asarray(load_image(path)).astype(int)
    r, g, b = out[10, 5]
    assert r < 40 and g > 215 and b > 215  # cyan
    assert np.all(out[10, 25] > 215)  # white


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])  # PNG: APNG
def test_animated_image_gives_first_frame(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGB", (32, 24), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as im:
        assert getattr(im, "n_frames", 1) == 3
    out = np.asarray(load_image(path)).astype(int)
    assert out.shape == (24, 32, 3)
    assert out[..., 0].min() > 200 and out[..., 1].max() < 40


# ----- formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "tolerance"),
    [
        ("PPM", ".pgm", 0.0),  # grey: saved from L
        ("PPM", ".ppm", 0.0),
        ("TIFF", ".tiff", 0.0),
        ("WEBP", ".webp", 6.0),  # lossy
        ("BMP", ".bmp", 0.0),
        ("GIF", ".gif", 12.0),  # 256-colour palette
        ("PNG", ".png", 0.0),
        ("JPEG", ".jpg", 4.0),
    ],
)
def test_formats(
    tmp_path: Path, photo_arrays: dict[str, np.ndarray], fmt: str, suffix: str, tolerance: float
) -> None:
    source = Image.fromarray(photo_arrays["astronaut"])
    if suffix == ".pgm":
        source = source.convert("L")
    path = tmp_path / f"image{suffix}"
    source.save(path, format=fmt)
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.size == source.size
    assert _mean_abs(np.asarray(out), np.asarray(source.convert("RGB"))) <= tolerance


@pytest.mark.skipif(importlib.util.find_spec("pillow_heif") is None, reason="needs pillow-heif")
def test_heic(tmp_path: Path, photo_arrays: dict[str, np.ndarray]) -> None:
    import pillow_heif

    source = Image.fromarray(photo_arrays["chelsea"])
    path = tmp_path / "phone-photo.heic"
    # Written through pillow-heif's own API: load_image must register the opener itself.
    pillow_heif.from_pillow(source).save(path, quality=90)
    out = load_image(path)
    assert out.size == source.size
    assert _mean_abs(np.asarray(out), np.asarray(source)) < 10
    assert scan([tmp_path]).files == [path]


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_avif(tmp_path: Path, photo_arrays: dict[str, np.ndarray]) -> None:
    source = Image.fromarray(photo_arrays["chelsea"])
    path = tmp_path / "image"  # no extension: recognised by content
    source.save(path, format="AVIF", quality=90)
    out = load_image(path)
    assert out.size == source.size
    assert _mean_abs(np.asarray(out), np.asarray(source)) < 10
    assert scan([tmp_path]).files == [path]


# ----- refused files -----------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height: no pixel data, nothing big allocated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 10500])  # 400 Mpx (Pillow errors), 110 Mpx (warns)
def test_decompression_bomb_is_refused(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    with pytest.raises(ImageReadError, match="bomb") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_bomb_refused_even_when_warnings_are_not_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another decoder thread may have reset the warning filters; the limit still holds."""
    import warnings

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(10500, 10500))  # over Pillow's warning limit only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setattr(warnings, "simplefilter", lambda *a, **k: None)  # the race
        with pytest.raises(ImageReadError, match="bomb"):
            load_image(path)


def _assert_refused(path: Path, reason: str) -> None:
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert reason in message
    assert "\n" not in message


def test_truncated_jpeg(tmp_path: Path, photos: dict[str, Path]) -> None:
    data = photos["astronaut"].read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 3])
    _assert_refused(path, "truncated")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    _assert_refused(path, "empty")


def test_text_with_an_image_extension(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 10)
    _assert_refused(path, "not an image")


def test_missing_file(tmp_path: Path) -> None:
    _assert_refused(tmp_path / "nope.jpg", "no such file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_no_permission(tmp_path: Path, photos: dict[str, Path]) -> None:
    path = photos["coins"]
    path.chmod(0)
    try:
        _assert_refused(path, "permission denied")
    finally:
        path.chmod(0o644)


# ----- scanning folders ---------------------------------------------------------------------


def test_scan_sorts_out_images_and_other_files(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = tmp_path / "photos"
    (root / "notes.txt").write_text("hello")
    (root / "data.json").write_text("{}")
    (root / "empty.txt").touch()
    (root / "fake.jpg").write_text("not a jpeg")
    (root / "blank.png").touch()
    nested = root / "a" / "b"
    nested.mkdir(parents=True)
    deep = nested / "deep.jpg"
    deep.write_bytes(photos["coffee"].read_bytes())

    found = scan([root])
    names = {p.name for p in found.files}
    assert names == {p.name for p in photos.values()} | {"deep.jpg", "fake.jpg", "blank.png"}
    assert found.ignored == 3  # notes.txt, data.json, empty.txt: quietly counted
    assert found.errors == []
    assert all(p.is_absolute() for p in found.files)


def test_scan_survives_symlink_loops(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = tmp_path / "photos"
    sub = root / "sub"
    sub.mkdir()
    (sub / "x.jpg").write_bytes(photos["rocket"].read_bytes())
    (sub / "up").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (sub / "self").symlink_to(sub / "self")  # a link to itself
    found = scan([root])
    names = sorted(p.name for p in found.files)
    assert names == sorted([*(p.name for p in photos.values()), "x.jpg"])  # each once
    assert any("self" in str(path) for path, _ in found.errors)


def test_scan_reports_missing_roots(tmp_path: Path) -> None:
    found = scan([tmp_path / "missing"])
    assert found.files == []
    assert found.errors == [((tmp_path / "missing").absolute(), "no such file or folder")]


def test_scan_normalises_dotdot(tmp_path: Path, photos: dict[str, Path]) -> None:
    """`photos/../photos` and `photos` name the same files (the same keys in a collection)."""
    direct = scan([tmp_path / "photos"]).files
    via = scan([tmp_path / "photos" / ".." / "photos"]).files
    assert via == direct


def test_load_accepts_str_paths(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    path = tmp_path / "small"
    path.write_bytes(buffer.getvalue())
    assert load_image(str(path)).getpixel((0, 0)) == (1, 2, 3)
