"""Checking an uploaded query image before it goes near the model.

An upload is read into memory with a byte limit, recognised by content (never by its
name or declared type), limited to a few common formats, and its pixel count is checked
from the header before any pixel is decoded. Nothing is ever written to disk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.errors import LookalikeError
from lookalike.images import draft, register_heif, to_rgb

# Formats a browser or a phone produces. Pillow opens many more (EPS would even run
# Ghostscript); none of those is worth the attack surface for a query image.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "HEIF", "AVIF")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024
    # A 50 Mpx phone photo fits; each decoded RGB pixel costs 3 bytes of memory.
    max_pixels: int = 60_000_000


class UploadError(LookalikeError):
    """An uploaded query image was refused; the message says why."""


class UploadTooLargeError(UploadError):
    """Too many bytes or too many pixels."""


class UnsupportedImageError(UploadError):
    """Not an image, or a format we don't accept for queries."""


def read_limited(stream: BinaryIO, limits: UploadLimits, name: str = "upload") -> bytes:
    """The whole stream, refusing more than ``limits.max_bytes`` and empty files."""
    data = stream.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise UploadTooLargeError(f"{name}: file is over the limit of {limits.max_bytes:,} bytes")
    if not data:
        raise UploadError(f"{name}: empty file (0 bytes)")
    return data


def allowed_formats() -> list[str]:
    """The allowed formats this Pillow can open (HEIF/AVIF need pillow-heif or Pillow 11.2+)."""
    register_heif()
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


# Modes Image.reduce handles; a palette image is reduced after conversion by to_rgb instead.
_REDUCIBLE = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "I", "F", "CMYK"})


def shrink(image: Image.Image, min_side: int) -> Image.Image:
    """``image`` reduced by a whole factor (box filter) keeping both sides >= min_side.

    The model sees a few hundred pixels a side: a 7700x7700 PNG (Pillow cannot decode PNG at
    reduced scale as it does JPEG) is brought down at once, so what waits for the model and
    the RGB conversion work on a small image, not on 180 MB of pixels.
    """
    factor = min(image.size) // max(1, min_side)
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE:
        image = to_rgb(image)
    exif = image.getexif() if hasattr(image, "getexif") else None
    reduced = image.reduce(factor)
    if exif:
        reduced.info["exif"] = exif.tobytes()  # keep the orientation for exif_transpose
    return reduced


def decode_upload(
    data: bytes, limits: UploadLimits, min_side: int | None = None, name: str = "upload"
) -> Image.Image:
    """Bytes -> RGB image, decoded like indexed files are (EXIF rotation, RGB, 1st frame).

    ``min_side``: JPEGs may be decoded at a reduced scale down to this side (faster).
    """
    if len(data) > limits.max_bytes:
        raise UploadTooLargeError(f"{name}: file is over the limit of {limits.max_bytes:,} bytes")
    formats = allowed_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data), formats=formats) as im:
                if im.width * im.height > limits.max_pixels:
                    raise UploadTooLargeError(
                        f"{name}: {im.width}x{im.height} pixels is over the limit of "
                        f"{limits.max_pixels:,}"
                    )
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                if min_side and im.format in ("JPEG", "MPO"):
                    draft(im, min_side)
                im.load()
                small = shrink(im, min_side) if min_side else im
                image = ImageOps.exif_transpose(small) or small
                rgb = to_rgb(image)
                return rgb.copy() if rgb is im else rgb
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UnsupportedImageError(
            f"{name}: not an image in an accepted format ({', '.join(formats)})"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadTooLargeError(f"{name}: refused as a decompression bomb") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Pillow plugins raise these on truncated or malformed data.
        reason = str(exc) or type(exc).__name__
        raise UploadError(f"{name}: damaged image ({reason})") from None
