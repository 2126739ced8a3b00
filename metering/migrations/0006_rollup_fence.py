"""``metering_fence(x)``: returns ``x``. Declared VOLATILE (and PARALLEL SAFE) so that a
subquery selecting it is not pulled up into its parent query: the rollup's per-event
values are then computed once per event, below the sort of its GROUP BY, instead of once
per aggregate naming them, and the sort no longer carries each event's whole JSON. Unlike
an ``OFFSET 0`` fence it leaves the query free to run in parallel workers. The body is
inlined after that decision, so the call itself costs nothing. See docs/performance.md,
"Rollup".
"""

from django.db import migrations

FENCE = """
CREATE FUNCTION metering_fence(v anyelement) RETURNS anyelement
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$ SELECT v $$;
"""


class Migration(migrations.Migration):
    dependencies = [("metering", "0005_bucket_unique_values")]

    operations = [
        migrations.RunSQL(FENCE, "DROP FUNCTION IF EXISTS metering_fence(anyelement)"),
    ]
