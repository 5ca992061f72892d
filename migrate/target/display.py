"""What the registry says an image is and how the portal drew it → OME-NGFF. Pure.

- ``displaySettings`` → ``omero`` (one channel): ``window`` = ``contrastLimits {start, end,
  min, max}``, ``color`` = the CSS colour as six hex digits (CSS ``green`` is ``008000``,
  as the portal's Neuroglancer drew it; none: ``FFFFFF``), ``inverted`` = ``invertLUT``,
  ``label`` = the source's description (else its name), ``active`` = true.
- Label images: ``contentType: segmentation`` (with an integer dtype) is a label image,
  whatever its name says; ``prediction``, ``analysis`` (contact sites, skeletons: segment
  ids, but derived measurements), ``em`` and ``lm`` stay images. Without a registry entry the
  name rule of :func:`migrate.target.plan.is_label_image` decides; ``--label`` adds images
  either way.
"""

from __future__ import annotations

from typing import Any

from schemas.registry import RegistrySource

CSS_COLOURS = {
    "white": "FFFFFF", "black": "000000", "red": "FF0000", "green": "008000", "lime": "00FF00",
    "blue": "0000FF", "yellow": "FFFF00", "cyan": "00FFFF", "aqua": "00FFFF",
    "magenta": "FF00FF", "fuchsia": "FF00FF", "orange": "FFA500", "purple": "800080",
    "gray": "808080", "grey": "808080", "pink": "FFC0CB", "brown": "A52A2A",
}  # fmt: skip
"""CSS colour names (CSS Color Module Level 4) → RGB hex, the names the registry uses and
their neighbours; ``#RRGGBB`` and ``RRGGBB`` are taken as they are."""

DEFAULT_COLOUR = "FFFFFF"
"""A source without a colour is drawn grey (white at the top of its window)."""


def colour_hex(colour: str | None) -> str | None:
    """``colour`` as six upper-case hex digits (``"green"`` → ``"008000"``); None when it
    is neither a known CSS name nor a hex colour."""
    if colour is None:
        return DEFAULT_COLOUR
    text = colour.strip().lower()
    if text in CSS_COLOURS:
        return CSS_COLOURS[text]
    digits = text.removeprefix("#")
    if len(digits) == 6 and all(c in "0123456789abcdef" for c in digits):
        return digits.upper()
    return None


def omero(source: RegistrySource) -> dict[str, Any]:
    """The ``omero`` metadata of an image from its registry source (see the module
    docstring); the colour must be known (:func:`colour_hex` not None)."""
    display = source.displaySettings
    limits = display.contrastLimits
    colour = colour_hex(display.color)
    assert colour is not None, "checked by the caller"
    return {
        "channels": [
            {
                "active": True,
                "color": colour,
                "inverted": display.invertLUT,
                "label": source.description or source.name,
                "window": {
                    "min": limits.min,
                    "max": limits.max,
                    "start": limits.start,
                    "end": limits.end,
                },
            }
        ]
    }


def registry_label(source: RegistrySource, dtype: str) -> bool:
    """Is this source a label image (``contentType: segmentation``, integer dtype)?"""
    return source.contentType == "segmentation" and dtype.startswith(("int", "uint"))
