"""Depth maps stored as images: 16-bit PNGs (millimetres), float maps (metres), 8-bit refused."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .. import _checks

__all__ = ["depth_from_image"]


def depth_from_image(img: Image.Image, *, scale: float | None, where: str) -> np.ndarray:
    """A depth image as float32 metres: 16-bit (and 32-bit integer) maps are divided by
    ``scale`` (stored units per metre: 1000 for millimetres); float maps (mode ``F``) are
    metres already. 8-bit maps are refused: 256 levels with no metric scale.

    Raises:
        SSLRobustValueError: an 8-bit or colour depth image, or an integer map without scale.

    Example:
        >>> from PIL import Image
        >>> img = Image.fromarray(np.array([[0, 1500]], dtype=np.uint16))
        >>> depth_from_image(img, scale=1000.0, where="d.png").tolist()
        [[0.0, 1.5]]
    """
    arr = np.asarray(img)
    if img.mode == "F" or arr.dtype.kind == "f":
        out = arr.astype(np.float32)
        return out / np.float32(scale) if scale else out
    if img.mode in ("L", "P", "1", "LA", "RGB", "RGBA") or arr.dtype == np.uint8:
        raise _checks.SSLRobustValueError(
            f"depth image {where} is 8-bit (mode {img.mode}); depth must be a 16-bit PNG "
            "(millimetres) or a float map (metres): an 8-bit map has 256 levels and no metric "
            "scale, so it would be silently wrong — use the original 16-bit depth files"
        )
    if not scale:
        raise _checks.SSLRobustValueError(
            f"depth image {where} holds integers ({arr.dtype}); give depth_scale= (stored "
            "units per metre, 1000 for millimetres)"
        )
    metres: np.ndarray = arr.astype(np.float32) / np.float32(scale)
    return metres
