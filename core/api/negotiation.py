"""Content negotiation with a fast path for the usual request of a one-renderer view."""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, skipped when its answer is known in advance: the view has one
    renderer, there is no format override, and the client accepts anything or exactly
    that renderer's type (what gateways and SDKs send). DRF would pick the same renderer
    and media type after parsing the ``Accept`` header; everything else (another type,
    a list, quality values: a 406 where nothing matches) goes through DRF's rules."""

    def select_renderer(self, request, renderers, format_suffix=None):
        if len(renderers) == 1 and not format_suffix:
            renderer = renderers[0]
            accept = request.META.get("HTTP_ACCEPT")
            if (accept is None or accept == "*/*" or accept == renderer.media_type) and (
                self.settings.URL_FORMAT_OVERRIDE not in request.query_params
            ):
                return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)
