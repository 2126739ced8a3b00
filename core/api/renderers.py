"""JSON with exact numbers, for the OpenMeter-compatible endpoints."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from django.utils.functional import Promise
from rest_framework import renderers
from rest_framework.utils.encoders import JSONEncoder

from core.money import plain_decimal


def _fallback(value):
    if isinstance(value, str | Promise):  # DRF's ErrorDetail and lazy translations
        return str(value)
    return JSONEncoder().default(value)


_exact_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=_fallback)


def _exact(data):
    """``data`` with every Decimal as its plain digits, embedded as a raw JSON number:
    msgspec writes ``str(Decimal)``, which is ``500.000000`` for a database value and
    ``1E-7`` or ``1E+2`` for others."""
    if isinstance(data, Decimal):
        return msgspec.Raw(plain_decimal(data).encode())
    if isinstance(data, dict):
        return {key: _exact(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_exact(value) for value in data]
    return data


class ExactNumberJSONRenderer(renderers.JSONRenderer):
    """JSON in which a ``Decimal`` is an exact JSON number.

    OpenMeter sends query values as JSON numbers; DRF's encoder would pass a Decimal
    through float (0.1 + 0.2 = 0.30000000000000004, integers past 2**53 rounded), so this
    renderer writes the Decimal's own digits instead, without padding or exponent.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        return _exact_encoder.encode(_exact(data))
