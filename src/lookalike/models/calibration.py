"""A fixed set of real photos for calibrating int8 models, available without a network.

Static quantisation needs the range of every activation on typical inputs. These come
from the photos bundled with scikit-image and scikit-learn (13 photos: people, animals,
objects, scenery, microscopy, astronomy), each also mirrored and cropped, so that every
build calibrates on exactly the same pixels.
"""

from __future__ import annotations

import importlib.util

from PIL import Image, ImageOps

from lookalike.errors import ModelError

# Photos bundled in the scikit-image wheel (no download); greyscale ones become RGB.
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
)
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}
CROP = 0.6  # side of the centre crop, as a fraction of the photo's
VIEWS = 3  # images per source photo: whole, mirrored, centre crop


def calibration_available() -> bool:
    """Cheap (no import): are the packages holding the photos installed?"""
    return all(importlib.util.find_spec(module) is not None for module in PACKAGES)


def source_photos() -> list[Image.Image]:
    """The 13 bundled photos, RGB, in a fixed order."""
    missing = [pip for module, pip in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ModelError(
            "int8 models calibrate on the photos bundled with scikit-image and "
            f"scikit-learn: pip install {' '.join(missing)}"
        )
    import skimage.data
    from sklearn.datasets import load_sample_images

    arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    arrays.append(skimage.data.stereo_motorcycle()[0])  # the left view
    arrays.extend(load_sample_images().images)  # china, flower
    return [Image.fromarray(array).convert("RGB") for array in arrays]


def calibration_photos() -> list[Image.Image]:
    """Each source photo whole, mirrored, and its centre zoomed in (13 x VIEWS images).

    More views hardly change the result (MinMax ranges: the whole photos hold the
    extremes; cosine to float 0.994 with 13, 39 or 78 images) but cost time and memory.
    """
    out = []
    for photo in source_photos():
        w, h = photo.size
        cw, ch = int(w * CROP), int(h * CROP)
        left, top = (w - cw) // 2, (h - ch) // 2
        out.extend([photo, ImageOps.mirror(photo), photo.crop((left, top, left + cw, top + ch))])
    return out
