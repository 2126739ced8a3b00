from __future__ import annotations

from django.db import models


class DemoLoad(models.Model):
    """What ``demo_load`` has done, so that running it again does nothing heavy and
    applies the same catalog (its dates are relative to the first load's instant)."""

    reference_time = models.DateTimeField(help_text="The instant the demo was first loaded.")
    events_loaded = models.PositiveIntegerField(default=0)
    history_made_at = models.DateTimeField(
        null=True, blank=True, help_text="When the billing history and settlement states were made."
    )

    class Meta:
        verbose_name = "demo load"

    def __str__(self) -> str:
        return f"Demo loaded at {self.reference_time:%Y-%m-%d %H:%M} UTC"
