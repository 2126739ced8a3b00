"""The customer overview's consumer keys timeline: every gateway consumer key ever mapped
to a customer's tree, each with every mapping it has had (to the tree or to someone else),
drawn as bars on one time axis in an inline SVG."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from customers.models import ConsumerMapping

TL_WIDTH, TL_LABEL, TL_ROW, TL_TOP = 960, 200, 26, 24
TL_LOOKBACK, TL_MARGIN = timedelta(days=365), timedelta(days=30)


def consumer_timeline(*, customer_ids: list[int], current_id: int, now: datetime) -> dict:
    """The consumer keys ever mapped to these customers, each with every mapping it has had
    (to these customers or others), drawn as bars on one time axis."""
    keys = sorted(
        set(
            ConsumerMapping.objects.filter(customer_id__in=customer_ids).values_list(
                "consumer_key", flat=True
            )
        )
    )
    mappings = list(
        ConsumerMapping.objects.filter(consumer_key__in=keys)
        .select_related("customer")
        .order_by("consumer_key", "valid_from")
    )
    return {
        "keys": keys,
        "mappings": mappings,
        "svg": _timeline_svg(mappings, keys, customer_ids, current_id, now),
    }


@dataclass(frozen=True)
class _Axis:
    """The timeline's time axis: where an instant falls, in px from the SVG's left edge."""

    start: datetime
    end: datetime
    plot_w: float

    @classmethod
    def of(cls, mappings, now: datetime) -> _Axis:
        # The axis starts a month before the first change of the last year (or the first
        # mapping, if later): a key mapped since 2000 does not squeeze this year's moves.
        first = min(m.valid_from for m in mappings)
        changes = [
            t for m in mappings for t in (m.valid_from, m.valid_to) if t and t >= now - TL_LOOKBACK
        ]
        start = max(first, min(changes, default=first) - TL_MARGIN)
        end = max([now, *(m.valid_to for m in mappings if m.valid_to)])
        end_pad = 24  # px after the axis end: an open mapping's arrow
        return cls(start=start, end=end, plot_w=TL_WIDTH - TL_LABEL - end_pad)

    def x(self, t: datetime) -> str:
        span = (self.end - self.start).total_seconds() or 1.0
        return f"{TL_LABEL + self.plot_w * (t - self.start).total_seconds() / span:.1f}"


def _timeline_segment(m, *, key: str, y: int, axis: _Axis, css_class: str) -> SafeString:
    """One mapping's bar on its key's row, titled with its exact times."""
    until = m.valid_to or axis.end
    until_text = f"{m.valid_to:%Y-%m-%d %H:%M}" if m.valid_to else "open-ended"
    since = max(m.valid_from, axis.start)
    width = max(float(axis.x(until)) - float(axis.x(since)), 2.0)
    return format_html(
        '<rect class="seg {}" x="{}" y="{}" width="{}" height="16" rx="3">'
        "<title>{} → {}: {} – {} (UTC)</title></rect>"
        '<text class="seglabel" x="{}" y="{}">{}{}</text>',
        css_class,
        axis.x(since),
        y + 4,
        f"{width:.1f}",
        key,
        m.customer.key,
        f"{m.valid_from:%Y-%m-%d %H:%M}",
        until_text,
        f"{float(axis.x(since)) + 4:.1f}",
        y + 16,
        ("… " if since > m.valid_from else "") + m.customer.key,
        " →" if m.valid_to is None else "",
    )


def _timeline_row(
    mappings, *, key: str, y: int, axis: _Axis, customer_ids, current_id
) -> list[SafeString]:
    """A consumer key's row: its label, its rule, and a bar per mapping on the axis
    (this customer's, another in its tree, or someone else's)."""
    parts = [
        format_html('<text class="key" x="4" y="{}">{}</text>', y + 16, key),
        format_html(
            '<line class="row" x1="{}" x2="{}" y1="{}" y2="{}"/>',
            TL_LABEL,
            TL_WIDTH,
            y + TL_ROW,
            y + TL_ROW,
        ),
    ]
    for m in (m for m in mappings if m.consumer_key == key):
        if m.valid_to is not None and m.valid_to <= axis.start:
            continue  # ended before the axis starts (still in the table)
        css_class = (
            "this"
            if m.customer_id == current_id
            else "tree"
            if m.customer_id in customer_ids
            else "other"
        )
        parts.append(_timeline_segment(m, key=key, y=y, axis=axis, css_class=css_class))
    return parts


def _timeline_svg(mappings, keys, customer_ids, current_id, now) -> SafeString | None:
    """The consumer keys' mappings over time as an SVG: a row per key, the axis's first
    and last day, and a line at now."""
    if not mappings:
        return None
    axis = _Axis.of(mappings, now)
    height = TL_TOP + TL_ROW * len(keys) + 8
    parts = []
    for i, key in enumerate(keys):
        parts += _timeline_row(
            mappings,
            key=key,
            y=TL_TOP + i * TL_ROW,
            axis=axis,
            customer_ids=customer_ids,
            current_id=current_id,
        )
    for t, anchor in ((axis.start, "start"), (axis.end, "end")):
        parts.append(
            format_html(
                '<text class="tick" x="{}" y="14" text-anchor="{}">{}</text>',
                axis.x(t),
                anchor,
                f"{t:%Y-%m-%d}",
            )
        )
    parts.append(
        format_html(
            '<line class="now" x1="{}" x2="{}" y1="18" y2="{}"><title>now</title></line>',
            axis.x(now),
            axis.x(now),
            height - 4,
        )
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {w} {h}" width="{w}" '
        'height="{h}" role="img" aria-label="Consumer key mappings over time"><style>{style}</style>{body}</svg>',
        w=TL_WIDTH,
        h=height,
        style=_TL_STYLE,
        body=format_html_join("", "{}", ((p,) for p in parts)),
    )


_TL_STYLE = (
    "text{font:11px system-ui,-apple-system,sans-serif;fill:#333}.key{font-family:monospace}"
    ".seglabel{fill:#fff;pointer-events:none}.row{stroke:#eee}.now{stroke:#ba2121;stroke-dasharray:3 3}"
    ".seg.this{fill:#417690}.seg.tree{fill:#5b9aa0}.seg.other{fill:#aaa}"
)
