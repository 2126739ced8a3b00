from __future__ import annotations

from rest_framework import serializers

from metering.models import JSONPATH_VALIDATOR, Feature, Meter

# API field name for a model field name, where they differ (service errors use the model's)
API_FIELD_NAMES = {"value_property": "value", "__all__": "non_field_errors"}


class MeterSerializer(serializers.ModelSerializer):
    """A meter addressed by its key. Once it has data, ``event_type``, ``aggregation`` and
    ``value`` cannot change (make a new meter instead)."""

    value = serializers.CharField(
        source="value_property",
        required=False,
        allow_blank=True,
        max_length=255,
        validators=[JSONPATH_VALIDATOR],
        help_text="JSONPath to the value in the event's data, e.g. $.tokens. Not used by COUNT.",
    )
    group_by = serializers.JSONField(
        required=False,
        help_text='Dimensions to group usage by: {"name": "$.path"}, e.g. {"model": "$.model"}.',
    )
    features = serializers.SlugRelatedField(
        slug_field="key", many=True, read_only=True, help_text="Keys of the features on it."
    )

    class Meta:
        model = Meter
        fields = [
            "key",
            "name",
            "description",
            "event_type",
            "aggregation",
            "value",
            "group_by",
            "features",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class MeterUpdateSerializer(MeterSerializer):
    class Meta(MeterSerializer.Meta):
        read_only_fields = ["key", "created_at", "updated_at"]


class FeatureSerializer(serializers.ModelSerializer):
    """A feature addressed by its key: a meter (by key) and filters on its dimensions."""

    meter = serializers.SlugRelatedField(slug_field="key", queryset=Meter.objects.all())
    filters = serializers.JSONField(
        required=False,
        help_text='Only usage whose dimensions have one of these values: {"status": ["200"]}. '
        "Empty: all usage of the meter.",
    )

    class Meta:
        model = Feature
        fields = ["key", "name", "meter", "filters", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class FeatureUpdateSerializer(FeatureSerializer):
    class Meta(FeatureSerializer.Meta):
        read_only_fields = ["key", "created_at", "updated_at"]


class UnattributedSubjectSerializer(serializers.Serializer):
    subject = serializers.CharField(help_text="The event subject (gateway consumer key).")
    events = serializers.IntegerField(help_text="Stored events no consumer mapping covered.")
    first_time = serializers.DateTimeField(help_text="Time of the first such event.")
    last_time = serializers.DateTimeField(help_text="Time of the last such event.")
