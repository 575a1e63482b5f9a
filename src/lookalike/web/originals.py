"""How an indexed image file is served whole: as-is when browsers can show its format,
else as a large JPEG preview. The file's content is checked again at serving time, so a
path whose file was swapped for something else since indexing is not served."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lookalike.errors import ImageReadError
from lookalike.images import register_heif

# Pillow format -> MIME type, for formats every current browser displays.
BROWSER_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}


def browser_media_type(path: str | Path) -> str | None:
    """MIME type to send the file with, or None when it needs converting first.

    Raises ImageReadError when the file is gone or is no longer an image.
    """
    register_heif()
    try:
        with Image.open(path) as im:
            fmt = im.format
    except FileNotFoundError:
        raise ImageReadError(path, "the file is no longer on disk") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "the file is no longer an image") from None
    except OSError as exc:
        raise ImageReadError(path, f"unreadable ({exc.strerror or exc})") from None
    return BROWSER_TYPES.get(fmt or "")
