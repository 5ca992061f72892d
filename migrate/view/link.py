"""A Neuroglancer state as a link: the viewer's URL with the state in its fragment."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, unquote, urlsplit

DEFAULT_NEUROGLANCER_URL = "https://neuroglancer-demo.appspot.com/"
"""The public Neuroglancer instance Google hosts (any instance works: ``--neuroglancer-url``)."""


def state_fragment(state: dict[str, Any]) -> str:
    """``#!`` and the state as compact JSON, percent-encoded like JavaScript's
    ``encodeURIComponent`` (what Neuroglancer decodes)."""
    text = json.dumps(state, separators=(",", ":"), ensure_ascii=False)
    return "#!" + quote(text, safe="-_.!~*'()")


def state_link(state: dict[str, Any], neuroglancer_url: str = DEFAULT_NEUROGLANCER_URL) -> str:
    """The link that opens ``state`` in the Neuroglancer at ``neuroglancer_url`` (any
    fragment it has is replaced)."""
    base = neuroglancer_url.split("#", 1)[0]
    return base + state_fragment(state)


def state_from_link(link: str) -> dict[str, Any]:
    """The state a Neuroglancer link carries (``…#!{json}``, percent-encoded or not);
    raises ValueError when there is none."""
    fragment = urlsplit(link).fragment if "://" in link else link.lstrip("#")
    fragment = fragment.removeprefix("!")
    if not fragment:
        raise ValueError("no state after '#!'")
    value = json.loads(unquote(fragment))
    if not isinstance(value, dict):
        raise ValueError("the state is not a JSON object")
    return value
