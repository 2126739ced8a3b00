"""The JSON request bodies the API's write endpoints take.

Every body the API parses with DRF is an object (a list, a string or ``null`` is refused
with a 400 before any view reads it), and holds only text PostgreSQL can store: no NUL
character (``\\u0000``, which neither ``text`` nor ``jsonb`` can hold) and no lone UTF-16
surrogate (``\\ud800``, which is not UTF-8), in a key or a value, at any depth. The event
ingestion endpoints read their bodies themselves (arrays included) and do not use this.
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def unstorable_text_path(value, path: str = "") -> str | None:
    """The path (``rate_cards[0].price.model``, or ``(body)``) of the first key or string in
    ``value`` that holds a NUL or a lone surrogate, or None when there is none."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            if not _storable(node):
                return where or "(body)"
        elif isinstance(node, dict):
            for key, item in node.items():
                child = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and not _storable(key):
                    return child
                stack.append((item, child))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
    return None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


class JSONObjectParser(JSONParser):
    """DRF's JSON parser, refusing a body that is not an object or holds text that cannot
    be stored (``ParseError``: a 400 problem document)."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if not isinstance(data, dict):
            kind = "null" if data is None else _KINDS.get(type(data), type(data).__name__)
            raise ParseError(f"The request body must be a JSON object, not {kind}.")
        where = unstorable_text_path(data)
        if where is not None:
            raise ParseError(
                f"{where}: text cannot hold a NUL character (\\u0000) or a lone surrogate."
            )
        return data
