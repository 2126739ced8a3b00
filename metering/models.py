from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models

from customers.models import KEY_VALIDATOR


class Aggregation(models.TextChoices):
    SUM = "SUM", "Sum of the value"
    COUNT = "COUNT", "Count of events"
    UNIQUE_COUNT = "UNIQUE_COUNT", "Count of distinct values"
    MAX = "MAX", "Largest value"
    MIN = "MIN", "Smallest value"
    AVG = "AVG", "Average value"
    LATEST = "LATEST", "Latest value"


JSONPATH_VALIDATOR = RegexValidator(
    r"^\$", "A JSONPath into the event's data, starting with '$', e.g. $.tokens"
)


class Meter(models.Model):
    """Which events count (``event_type``) and how they aggregate.

    Once a meter has data its event type, aggregation and value cannot change: the
    stored rollups would no longer mean what the meter says. Make a new meter instead.
    """

    key = models.CharField(max_length=100, unique=True, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    event_type = models.CharField(
        max_length=255, help_text="The CloudEvents 'type' this meter counts."
    )
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    value_property = models.CharField(
        "value",
        max_length=255,
        blank=True,
        validators=[JSONPATH_VALIDATOR],
        help_text="JSONPath to the value in the event's data, e.g. $.tokens. Not used by COUNT.",
    )
    group_by = models.JSONField(
        default=dict,
        blank=True,
        help_text='Dimensions to group usage by: {"name": "$.path"}, e.g. {"model": "$.model"}.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Feature(models.Model):
    """What customers are priced and entitled on: a meter, optionally filtered by dimensions."""

    key = models.CharField(max_length=100, unique=True, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=200, blank=True)
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="features")
    filters = models.JSONField(
        default=dict,
        blank=True,
        help_text='Only usage whose dimensions have one of these values: {"route": ["/flights"], "status": ["200"]}.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Event(models.Model):
    """A stored usage event (CloudEvents 1.0). Immutable.

    The table is partitioned by month on ``time`` and created by migration 0002 (Django
    cannot declare partitioned tables); ``(source, event_id)`` is kept unique across all
    partitions by the ``metering_eventkey`` table. ``xid`` is the id of the inserting
    transaction, which makes the rollup's watermark safe against out-of-order commits.
    """

    id = models.BigIntegerField(primary_key=True)
    source = models.CharField(max_length=255)
    event_id = models.CharField("id", max_length=255)
    type = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    time = models.DateTimeField()
    data = models.JSONField(null=True)
    ingested_at = models.DateTimeField()
    xid = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "metering_event"
        ordering = ["-time"]

    def __str__(self) -> str:
        return f"{self.type} {self.source}/{self.event_id}"


class UsageBucket(models.Model):
    """Usage of one meter by one subject (and the customer it mapped to) in one UTC hour,
    per combination of group-by values. Holds what every aggregation needs to stay exact
    over any number of hours: count, sum, min, max, the latest value with its time, and
    for UNIQUE_COUNT the bucket's distinct values (``unique_values``, sorted): a period's
    unique count is the number of distinct values over its buckets, never a sum of
    hourly counts.

    Buckets are derived data, rebuilt from the events at will, and written only by the
    rollup (``metering.rollup``) under the meter's watermark lock; their foreign keys are
    therefore not database constraints (a constraint check per written bucket cost a third
    of the rollup's writing, see docs/performance.md). Deleting a meter or customer through
    the ORM still cascades or protects as declared. The identity constraint stays: it is
    what makes a bucket unique.
    """

    meter = models.ForeignKey(
        Meter,
        on_delete=models.CASCADE,
        related_name="buckets",
        db_constraint=False,
        db_index=False,  # the identity constraint leads with the meter
    )
    customer = models.ForeignKey(
        "customers.Customer",
        null=True,
        on_delete=models.PROTECT,
        related_name="usage_buckets",
        db_constraint=False,
        db_index=False,  # the identity constraint (meter, customer, hour, ...) serves reads
    )
    subject = models.CharField(max_length=255)
    hour = models.DateTimeField()
    dims = models.JSONField(default=dict)
    event_count = models.BigIntegerField(default=0)
    value_count = models.BigIntegerField(default=0)
    value_sum = models.DecimalField(max_digits=40, decimal_places=12, default=0)
    value_min = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    value_max = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    latest_time = models.DateTimeField(null=True)
    latest_value = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    latest_event_id = models.BigIntegerField(null=True)
    first_time = models.DateTimeField()
    last_time = models.DateTimeField()
    unique_values = ArrayField(
        models.TextField(),
        null=True,
        help_text="UNIQUE_COUNT only: the bucket's distinct values, sorted (NULL for other meters).",
    )

    class Meta:
        constraints = [
            # hour before subject: the same index answers (meter, customer, hour range)
            models.UniqueConstraint(
                fields=["meter", "customer", "hour", "subject", "dims"],
                name="usage_bucket_identity",
                nulls_distinct=False,
            )
        ]
        indexes = [
            models.Index(fields=["meter", "hour"], name="usage_bucket_meter_hour"),
            models.Index(fields=["subject", "hour"], name="usage_bucket_subject_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.meter_id}/{self.subject} @ {self.hour.isoformat()}"


class RollupState(models.Model):
    """A meter's rollup watermark: every event whose transaction id is below it is in the
    buckets. Advanced only to ``pg_snapshot_xmin`` of the rolling transaction, so an ingest
    transaction that commits late is never skipped."""

    meter = models.OneToOneField(
        Meter, on_delete=models.CASCADE, primary_key=True, related_name="rollup_state"
    )
    watermark = models.BigIntegerField(default=0)
    events_rolled_up = models.BigIntegerField(default=0)
    last_run_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"rollup of meter {self.meter_id} below xid {self.watermark}"


class UsageTouch(models.Model):
    """A customer's rolled-up usage of a UTC day changed, in transaction ``xid``.

    The rollup and re-attribution stamp these; billing compares them with the
    transaction horizon an invoice was rated at, to find drafts to recompute and issued
    periods with late usage, without rescanning events.
    """

    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    xid = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["customer", "day"], name="usage_touch_identity")
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.day} @ {self.xid}"


class RollupFailure(models.Model):
    """A meter whose rollup fails, and has failed every time since ``first_failed_at``:
    what the dashboard lists under "Needs attention".

    ``stage`` says what fails. ``rollup``: rolling up the meter's new events (one row per
    meter); its watermark stays where it was, so nothing after it is counted until the
    rollup succeeds, and the row is deleted by the run that succeeds. ``reattribution``:
    rebuilding one consumer key's rolled-up usage after its mapping changed (one row per
    meter, key and range); each run tries again, and the row is deleted once it works.
    ``event_ids`` names the events found to cause it (``metering_event.id``, at most
    ``ROLLUP_FAILURE_EVENT_IDS``), when they could be found.
    """

    class Stage(models.TextChoices):
        ROLLUP = "rollup", "Rollup of new events"
        REATTRIBUTION = "reattribution", "Re-attribution after a mapping change"

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="rollup_failures")
    stage = models.CharField(max_length=16, choices=Stage.choices)
    consumer_key = models.CharField(max_length=255, blank=True)  # reattribution only
    range_start = models.DateTimeField(null=True, blank=True)  # reattribution only
    range_end = models.DateTimeField(null=True, blank=True)  # reattribution only; open: None
    error = models.TextField()
    event_ids = ArrayField(models.BigIntegerField(), default=list, blank=True)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["first_failed_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["meter"],
                condition=models.Q(stage="rollup"),
                name="rollup_failure_one_per_meter",
            ),
            models.UniqueConstraint(
                fields=["meter", "consumer_key", "range_start", "range_end"],
                condition=models.Q(stage="reattribution"),
                name="rollup_failure_one_per_reattribution",
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.meter_id}: {self.stage} failing since {self.first_failed_at.isoformat()}"


ROLLUP_FAILURE_EVENT_IDS = 10


class RefusedEvent(models.Model):
    """A stored event that a meter leaves out of its buckets, because they cannot hold
    what it says: a value of ``10^28`` or more (the buckets keep 28 digits before the
    point), or a value PostgreSQL cannot compute at all (``reason`` says which).

    The event itself stays stored and unchanged; only this meter does not count it, and
    the operator sees it (the dashboard, until acknowledged). The meter's other events
    are rolled up as usual. Refused events are always below the meter's watermark, so
    the reads that add up the events not rolled up yet never meet them.
    """

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="refused_events")
    # metering_event is partitioned, with the key (id, time): no foreign key to it
    event_pk = models.BigIntegerField("event row id")
    event_time = models.DateTimeField()
    source = models.CharField(max_length=255)
    event_id = models.CharField("id", max_length=255)
    subject = models.CharField(max_length=255)
    xid = models.BigIntegerField()
    reason = models.TextField()
    refused_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-refused_at", "event_pk"]
        constraints = [
            models.UniqueConstraint(fields=["meter", "event_pk"], name="refused_event_once")
        ]
        indexes = [
            models.Index(fields=["meter", "xid"], name="refused_event_meter_xid"),
            models.Index(
                fields=["meter"],
                name="refused_event_unacknowledged",
                condition=models.Q(acknowledged_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source}/{self.event_id} refused by meter {self.meter_id}"


class KongSkippedEntry(models.Model):
    """Kong logs that the HTTP Log receiver skipped, counted per day (UTC, of receipt) and
    reason, with the latest skipped log as a sample: what the operator sees beside the
    unattributed usage.

    The receiver stores every log it can attribute and read and skips the others rather
    than refuse the batch (Kong drops a refused batch after its retries, good logs and
    all). A skipped log is counted each time it arrives: a batch Kong sends again counts
    its skipped logs again, while its stored events count once. One row per day and
    reason, upserted once per request, keeps the receiver's cost flat.
    """

    class Reason(models.TextChoices):
        NO_SUBJECT = "no_subject", "No consumer and no subject header"
        BAD_SUBJECT = "bad_subject", "Subject too long or holding a NUL"
        NOT_A_LOG = "not_a_log", "Not a Kong HTTP log (not an object, or a stream log)"
        NOT_UTF8 = "not_utf8", "Not UTF-8"
        BAD_NUMBER = "bad_number", "A number that cannot be read"
        BAD_TIME = "bad_time", "started_at unreadable or outside the accepted window"
        BAD_TOKENS = "bad_tokens", "Token counts that are not whole numbers"

    day = models.DateField()
    reason = models.CharField(max_length=32, choices=Reason.choices)
    count = models.PositiveBigIntegerField(default=0)
    sample = models.TextField(blank=True, help_text="The latest skipped log, truncated.")
    detail = models.TextField(blank=True, help_text="Why the latest was skipped.")
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["-day", "reason"]
        verbose_name = "skipped Kong log"
        constraints = [
            models.UniqueConstraint(fields=["day", "reason"], name="kong_skipped_once_a_day")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.reason}: {self.count}"


class KongConsumer(models.Model):
    """A consumer imported from a Kong Admin API (``GET /consumers``): a consumer key the
    operator can link to a customer before, or after, its traffic arrives.

    ``key`` is the subject Kong's traffic from this consumer carries (its ``custom_id``,
    else ``username``, else ``id``: ``metering.gateways.kong.subject.kong_consumer_subject``),
    so a consumer mapping made for it matches the events; the other identifiers are kept
    to recognise it. Whether it is linked is not stored: it is what the consumer mappings say
    at the time asked.
    """

    key = models.CharField(
        max_length=255, unique=True, help_text="The subject of this consumer's events."
    )
    kong_id = models.CharField("Kong id", max_length=64, blank=True)
    username = models.CharField(max_length=255, blank=True)
    custom_id = models.CharField("custom id", max_length=255, blank=True)
    tags = models.JSONField(default=list, blank=True)
    kong_created_at = models.DateTimeField("created in Kong", null=True, blank=True)
    admin_url = models.CharField(
        "Admin API", max_length=500, help_text="The Kong Admin API it was last imported from."
    )
    imported_at = models.DateTimeField(help_text="When an import first listed it.")
    updated_at = models.DateTimeField(help_text="When an import last changed it.")

    class Meta:
        ordering = ["key"]
        verbose_name = "Kong consumer"

    def __str__(self) -> str:
        return self.key
