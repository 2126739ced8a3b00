"""Validation errors keyed by the path of what is wrong in the request body.

Plans are nested (rate cards, their prices, their tiers), so every error names its path
the way billing's services and the YAML checker do: ``rate_cards[1].price.tiers[0].up_to``.
Serializer errors are flattened to the same paths, so a client reads one shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.exceptions import ValidationError

from core.api.errors import django_validation_error_detail

T = TypeVar("T")

# "rate_cards[2].price.tiers[0].up_to: must be ..." as rate_cards_validate words it.
_PATH_MESSAGE = re.compile(r"^(?P<path>[A-Za-z_]\w*(?:\[\d+\]|\.\w+)*): (?P<message>.+)$", re.S)


def path_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Flatten DRF's nested error detail to ``{"a.b[2].c": [messages]}``."""
    out: dict[str, list[str]] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "non_field_errors" and path:
                    walk(value, path)
                elif isinstance(key, int) or str(key).isdigit():  # a list item's errors
                    walk(value, f"{path}[{key}]")
                else:
                    walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list) and all(isinstance(m, str) for m in node):
            if node:
                out.setdefault(path or "non_field_errors", []).extend(str(m) for m in node)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        else:
            out.setdefault(path or "non_field_errors", []).append(str(node))

    walk(detail, prefix)
    return out


def service_errors(
    exc: DjangoValidationError, *, rename: Callable[[str], str] | None = None
) -> dict[str, list[str]]:
    """A service's ``ValidationError`` by path: a message that starts with a path
    (``rate_cards[0].price.unit_price: ...``) is filed under it."""
    out: dict[str, list[str]] = {}
    for field, messages in django_validation_error_detail(exc).items():
        for message in messages:
            path = field
            match = _PATH_MESSAGE.match(message) if field == "non_field_errors" else None
            if match:
                path, message = match["path"], match["message"]
            if rename is not None:
                path = rename(path)
            out.setdefault(path, []).append(message)
    return out


def call_service(
    call: Callable[..., T], *, rename: Callable[[str], str] | None = None, **kwargs: Any
) -> T:
    """Call a service; its ``ValidationError`` becomes a 400 with errors by path."""
    try:
        return call(**kwargs)
    except DjangoValidationError as exc:
        raise ValidationError(service_errors(exc, rename=rename)) from exc


def validated(serializer) -> dict:
    """The serializer's validated data, or a 400 with its errors by path."""
    if not serializer.is_valid():
        raise ValidationError(path_errors(serializer.errors))
    return dict(serializer.validated_data)
