"""The conditioning image as 8-bit RGB, whatever PIL mode the file has; whole-file checks for validation.

``PIL.Image.convert("RGB")`` alone clips wide greyscale (a 16-bit PNG of value 32768 becomes white,
not mid-grey) and drops alpha onto black. :func:`to_rgb` converts each mode by its real range:

- ``I;16`` / ``I;16L`` / ``I;16B`` / ``I;16N`` (16-bit greyscale): ``value / 257`` (65535 → 255);
- ``I`` (32-bit integer): as 16-bit when every value is in 0…65535 (how 16-bit PNGs and TIFFs often
  open), else the image's own min…max stretched to 0…255 (a constant image becomes black);
- ``F`` (32-bit float; NaN → 0, ±inf → the finite max/min): values in 0…1 × 255, else in 0…255 as they
  are, else in 0…65535 ÷ 257, else min…max stretched like ``I``;
- with alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa`` / ``La``, and ``P`` / ``L`` / ``RGB`` with a
  transparency entry): composited onto :data:`BACKGROUND` (white);
- ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``RGBX``: PIL's own conversion (CMYK without
  colour management: ``R = (255 − C)(255 − K) / 255``, likewise G and B).

:func:`check_image` opens, verifies and decodes the whole file, so that a truncated JPEG or PNG fails
while the flags are validated, before any weights load.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UserError

BACKGROUND: tuple[int, int, int] = (255, 255, 255)  # what transparent pixels become: white
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = ("RGBA", "LA", "PA")
PREMULTIPLIED = {"RGBa": "RGBA", "La": "LA"}


class ImageError(UserError):
    """The input image cannot be used; the message names the file (one line)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _unit_range(arr: np.ndarray, kind: str) -> np.ndarray:
    """``arr`` (float64) mapped to 0…1 by the rule of ``kind`` (``"I"`` or ``"F"``, see the module docstring)."""
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo >= 0 and kind == "F" and hi <= 1.0:
        return arr
    if lo >= 0 and kind == "F" and hi <= 255.0:
        return arr / 255.0
    if lo >= 0 and hi <= 65535.0:
        return arr / 65535.0
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _wide_grey_to_rgb(im: Image.Image) -> Image.Image:
    arr = np.asarray(im).astype(np.float64)
    if im.mode in SIXTEEN_BIT_MODES:
        unit = arr / 65535.0
    else:
        finite = np.isfinite(arr)
        if not finite.all():
            good = arr[finite]
            hi, lo = (float(good.max()), float(good.min())) if good.size else (0.0, 0.0)
            arr = np.nan_to_num(arr, nan=0.0, posinf=hi, neginf=lo)
        unit = _unit_range(arr, "F" if im.mode == "F" else "I")
    grey = (np.clip(unit, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_rgb(im: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """``im`` as an 8-bit ``RGB`` image: wide greyscale scaled by its range, alpha composited onto ``background``."""
    if im.mode in SIXTEEN_BIT_MODES or im.mode in ("I", "F"):
        return _wide_grey_to_rgb(im)
    if im.mode in PREMULTIPLIED:
        im = im.convert(PREMULTIPLIED[im.mode])
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB")


def _open(path: str | os.PathLike[str]) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(f"{str(path)!r} is not a readable image (UnidentifiedImageError)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{str(path)!r} is too large to decode ({_first_line(exc)})") from None
    except OSError as exc:
        raise ImageError(f"{str(path)!r} cannot be read ({_first_line(exc)})") from None


def load_rgb_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open ``path``, decode all of it and return it as 8-bit ``RGB`` (:func:`to_rgb`; alpha onto white).

    Raises :class:`ImageError` (one line naming the file) when the file is not an image, or is truncated
    or corrupt.
    """
    with _open(path) as im:
        try:
            im.load()
            return to_rgb(im)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{str(path)!r} is truncated or corrupt ({_first_line(exc)})") from None


def check_image(path: str | os.PathLike[str]) -> None:
    """Validate ``path`` as the input image: PIL's structure check (chunk CRCs, a PNG's end) and a full decode.

    Raises :class:`ImageError` (see :func:`load_rgb_image`).
    """
    with _open(path) as im:
        try:
            im.verify()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{str(path)!r} is truncated or corrupt ({_first_line(exc)})") from None
    load_rgb_image(path)
