"""The event store: a table partitioned by month on the event's time, and a key table
that keeps ``(source, id)`` unique across all partitions.

PostgreSQL's unique constraints on a partitioned table must include the partition key,
so the partitioned table alone could not deduplicate an event re-sent with another
time; ``metering_eventkey`` (primary key ``(source, event_id)``) does. Partitions are
created ahead by a beat task and on demand by ingestion (see metering/partitions.py).
"""

from django.db import migrations

FORWARD = r"""
CREATE TABLE metering_eventkey (
    source text NOT NULL,
    event_id text NOT NULL,
    time timestamptz NOT NULL,
    PRIMARY KEY (source, event_id)
);

CREATE SEQUENCE metering_event_id_seq AS bigint;

CREATE TABLE metering_event (
    id bigint NOT NULL DEFAULT nextval('metering_event_id_seq'),
    source text NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    subject text NOT NULL,
    time timestamptz NOT NULL,
    data jsonb,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    PRIMARY KEY (id, time)
) PARTITION BY RANGE (time);

ALTER SEQUENCE metering_event_id_seq OWNED BY metering_event.id;

CREATE INDEX metering_event_xid ON metering_event (xid);
CREATE INDEX metering_event_subject_time ON metering_event (subject, time);
CREATE INDEX metering_event_type_time ON metering_event (type, time);

-- A JSON value as a number: JSON numbers, and strings that spell a number; else NULL.
CREATE FUNCTION metering_numeric(v jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'number' THEN v::numeric
        WHEN 'string' THEN CASE
            WHEN (v #>> '{}') ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
            THEN (v #>> '{}')::numeric END
    END
$$;
"""

BACKWARD = """
DROP FUNCTION IF EXISTS metering_numeric(jsonb);
DROP TABLE IF EXISTS metering_event;
DROP TABLE IF EXISTS metering_eventkey;
"""


class Migration(migrations.Migration):
    dependencies = [("metering", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
