"""An index on the event time alone: the admin's event explorer lists the newest events
across all partitions, and retention and exports range over time."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("metering", "0003_usagetouch")]

    operations = [
        migrations.RunSQL(
            "CREATE INDEX IF NOT EXISTS metering_event_time ON metering_event (time)",
            "DROP INDEX IF EXISTS metering_event_time",
        )
    ]
