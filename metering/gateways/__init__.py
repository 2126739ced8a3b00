"""Presets that turn an API gateway's own logs into usage events, so metering a gateway
needs no custom code: each module converts one gateway's payloads into CloudEvents
(pure functions; no ORM, no clock), and ``metering/api/gateway_views.py`` receives them.
``services`` counts the logs a receiver skipped, ``selectors`` reads those counts.
"""
