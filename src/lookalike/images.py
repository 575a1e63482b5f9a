"""Reading image files, whatever they are, into RGB Pillow images.

Files are recognised by content (what Pillow detects), never by extension. EXIF
orientation is applied; every mode becomes RGB (transparency composited on white);
animated images give their first frame; decompression bombs are refused. Failures raise
ImageReadError with a one-line reason.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from lookalike.errors import ImageReadError

# Pillow's default limit (~89 Mpx warns, 2x errors). We make the warning an error too:
# a 200 Mpx "photo" is far more likely an attack or a mistake than something to embed.
MAX_PIXELS = 120_000_000

# Files larger than this are not read into memory (no photo is anywhere near; a huge file
# named .jpg is a disk image or a mistake).
MAX_FILE_BYTES = 1 << 30

_heif_registered: bool | None = None


def register_heif() -> None:
    """HEIC/AVIF support when pillow-heif is installed (optional)."""
    global _heif_registered
    if _heif_registered is not None:
        return
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        if hasattr(pillow_heif, "register_avif_opener"):
            pillow_heif.register_avif_opener()
        _heif_registered = True
    except ImportError:
        _heif_registered = False


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparent pixels become white."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit integer or float grey: scale to 8 bits by the actual range rather than
        # clipping (a float image in 0..1 would otherwise come out black).
        import numpy as np

        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = Image.fromarray(np.rint((arr - lo) * scale).astype("uint8"), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is not read (None: a regular file). Reading a FIFO blocks
    forever and a device such as /dev/zero never ends, so only regular files are read."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "not a regular file (a named pipe, FIFO)"
    if stat.S_ISCHR(mode):
        return "not a regular file (a character device)"
    if stat.S_ISBLK(mode):
        return "not a regular file (a block device)"
    if stat.S_ISSOCK(mode):
        return "not a regular file (a socket)"
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    """An fd open on ``path`` for reading and its fstat, refused unless a regular file.

    O_NONBLOCK so that opening a FIFO (swapped in after a scan, or given directly) returns at
    once instead of waiting for a writer; the fstat then says what was opened.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        reason = not_regular(st.st_mode)
        if reason:
            raise ImageReadError(path, reason)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file, with the fstat of the very file they came from (so a
    hash of these bytes and the image decoded from them always belong together)."""
    fd, st = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        if st.st_size == 0:
            raise ImageReadError(path, "empty file (0 bytes)")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageReadError(
                path, f"{st.st_size:,} bytes is over the limit of {MAX_FILE_BYTES:,} for an image"
            )
        data = fh.read(MAX_FILE_BYTES + 1)
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    return data, st


def load_image(
    path: str | os.PathLike[str], min_side: int | None = None, data: bytes | None = None
) -> Image.Image:
    """Open ``path`` as an RGB image (decoded from ``data``, its bytes, when given).

    ``min_side``: when given, JPEGs are decoded at a reduced scale (Pillow's draft mode)
    as long as both sides stay >= min_side, which is several times faster for photos.
    ``image.info["original_size"]`` is the file's own (width, height), upright.
    """
    path = Path(path)
    try:
        if data is None:
            data, _ = read_file(path)
        if data[4:8] == b"ftyp":  # ISO media (HEIC, AVIF): pillow-heif, imported only then
            register_heif()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                # Checked here too: catch_warnings is not thread-safe (decoder threads may
                # restore each other's filters), so Pillow's warning can slip through.
                limit = min(MAX_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
                if im.width * im.height > limit:
                    raise ImageReadError(
                        path,
                        f"{im.width}x{im.height} pixels is over the limit of "
                        f"{limit:,} (decompression bomb?)",
                    )
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # animated: first frame
                original_size = im.size  # before draft() shrinks it
                if min_side and im.format == "JPEG":
                    draft(im, min_side)
                im.load()
                image = ImageOps.exif_transpose(im) or im
                if image.size != im.size:  # rotated by 90 degrees: so is the true size
                    original_size = original_size[::-1]
                out = to_rgb(image).copy() if image is im else to_rgb(image)
                out.info["original_size"] = original_size
                return out
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory") from None
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"refused as a decompression bomb ({exc})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageReadError(path, "symlink loop") from None
        reason = str(exc) or type(exc).__name__
        raise ImageReadError(path, f"unreadable image ({reason})") from None
    except (ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Pillow plugins raise these on malformed headers.
        raise ImageReadError(path, f"damaged image ({type(exc).__name__}: {exc})") from None


def draft(im: Image.Image, min_side: int) -> None:
    """Ask the JPEG decoder for the smallest DCT scale keeping both sides >= min_side."""
    w, h = im.size
    scale = min(w, h) / float(min_side)
    if scale >= 2:
        im.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))


# Never decode truncated files silently as grey: a truncated file is reported.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class ScanResult:
    """Files found under some roots."""

    files: list[Path] = field(default_factory=list)  # candidate images (by content sniff)
    ignored: int = 0  # files that are plainly not images (.txt, .json...), counted quietly
    errors: list[tuple[Path, str]] = field(default_factory=list)  # unreadable dirs, loops...
    missing: list[Path] = field(default_factory=list)  # given paths that do not exist


# Magic numbers of the formats Pillow (and pillow-heif) open; a cheap content sniff that
# avoids a full Image.open per file while walking. The real check happens on decode.
_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
    b"RIFF",  # WebP (RIFF....WEBP)
    b"\x00\x00\x01\x00",  # ICO
    b"P1",
    b"P2",
    b"P3",
    b"P4",
    b"P5",
    b"P6",  # PNM family
    b"8BPS",  # PSD
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
    b"\xff\x4f\xff\x51",  # J2K codestream
    b"DDS ",
    b"qoif",
)
_FTYP_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def looks_like_image(head: bytes) -> bool:
    """True when the first bytes of a file match a known image signature (TGA has none:
    sniff() goes by its extension)."""
    if head.startswith(_SIGNATURES):
        return True
    # ISO-BMFF (HEIC/AVIF): ....ftypBRAND
    return len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in _FTYP_BRANDS


# Extensions of image files. Content decides; the name only decides whether a file whose
# content is not a known image (empty, or text named photo.jpg) is reported or ignored.
IMAGE_SUFFIXES = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".dib", ".tif",
        ".tiff", ".webp", ".heic", ".heif", ".avif", ".pgm", ".ppm", ".pbm", ".pnm", ".ico",
        ".jp2", ".j2k", ".jpx", ".tga", ".psd", ".dds", ".qoi", ".mpo",
    }
)  # fmt: skip


def sniff(path: Path) -> bool | None:
    """True: looks like an image; False: plainly not one (ignore quietly); None: unreadable,
    or named like an image but empty or not recognised (the decoder reports why)."""
    try:
        fd, _ = open_regular(path)
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(32)
    except (OSError, ImageReadError):
        return None
    if head and looks_like_image(head):
        return True
    suffix = path.suffix.lower()
    if suffix == ".tga" and head:
        return True  # TGA has no magic number
    return None if suffix in IMAGE_SUFFIXES else False


def iter_files(root: Path, errors: list[tuple[Path, str]]) -> Iterator[Path]:
    """All regular files under root (following symlinks, never looping)."""
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            st = directory.stat()
        except OSError as exc:
            errors.append((directory, f"cannot open folder ({exc.strerror or exc})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # a symlink loop or a second link to a folder already walked
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            errors.append((directory, f"cannot list folder ({exc.strerror or exc})"))
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(path)
                elif entry.is_file(follow_symlinks=True):
                    yield path
                else:
                    errors.append((path, _why_not_read(path, entry.is_symlink())))
            except OSError as exc:
                errors.append((path, f"cannot stat ({exc.strerror or exc})"))
        stack.extend(reversed(subdirs))


def _why_not_read(path: Path, is_symlink: bool) -> str:
    """The reason a folder entry that is neither a folder nor a regular file is skipped."""
    try:
        mode = path.stat().st_mode  # follows a symlink: say what it points at
    except OSError as exc:
        if is_symlink:
            return "broken or looping symlink"
        return f"cannot stat ({exc.strerror or exc})"
    return not_regular(mode) or "not a regular file"


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute with ``.``/``..`` removed (symlinks kept): the one spelling of
    a file's path used as its key in a collection."""
    return Path(os.path.abspath(Path(path).expanduser()))


def scan(paths: Iterable[str | os.PathLike[str]]) -> ScanResult:
    """Find image files under files/folders. Order is stable (sorted walk)."""
    result = ScanResult()
    seen: set[Path] = set()
    for raw in paths:
        root = absolute(raw)
        if not root.exists() and not root.is_symlink():
            result.errors.append((root, "no such file or folder"))
            result.missing.append(root)
            continue
        if not root.is_dir():
            try:
                reason = not_regular(root.stat().st_mode)
            except OSError as exc:
                reason = (
                    "broken or looping symlink"
                    if root.is_symlink()
                    else f"cannot stat ({exc.strerror or exc})"
                )
            if reason:
                result.errors.append((root, reason))
                continue
        candidates = iter_files(root, result.errors) if root.is_dir() else iter([root])
        for path in candidates:
            if path in seen:
                continue
            seen.add(path)
            kind = sniff(path)
            if kind is True:
                result.files.append(path)
            elif kind is None:
                # Empty or unreadable: reported by the decoder with its precise reason.
                result.files.append(path)
            else:
                result.ignored += 1
    return result
