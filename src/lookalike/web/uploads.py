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
                image = ImageOps.exif_transpose(im) or im
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
