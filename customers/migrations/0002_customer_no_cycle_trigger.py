"""The database refuses a cycle in the customer tree.

A trigger walks the new parent's ancestors; if it meets the row itself, the write fails
with a check violation. An advisory lock serialises parent changes, so two concurrent
changes (A under B, B under A) cannot both pass: the second one's check runs after the
first commits and sees it.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION customers_customer_no_cycle() RETURNS trigger AS $$
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('customers_customer.parent_id', 0));
    IF EXISTS (
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM customers_customer WHERE id = NEW.parent_id
            UNION
            SELECT c.id, c.parent_id FROM customers_customer c JOIN up ON c.id = up.parent_id
        )
        SELECT 1 FROM up WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'customer_no_cycle: placing customer % under customer id % would create a cycle',
            NEW.key, NEW.parent_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'customer_no_cycle';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER customer_no_cycle
    BEFORE INSERT OR UPDATE OF parent_id ON customers_customer
    FOR EACH ROW EXECUTE FUNCTION customers_customer_no_cycle();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS customer_no_cycle ON customers_customer;
DROP FUNCTION IF EXISTS customers_customer_no_cycle();
"""


class Migration(migrations.Migration):
    dependencies = [("customers", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
