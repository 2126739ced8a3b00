"""The database keeps issued invoices frozen.

Once an invoice leaves draft, its number, amounts, customer and period never change and
its lines can be neither added, changed nor removed; only the payment state and the
rendered PDF may move. Credit notes never change once written.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION billing_invoice_frozen() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'invoice_frozen: issued invoice % cannot be deleted', OLD.number
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (
        NEW.number IS DISTINCT FROM OLD.number OR NEW.customer_id <> OLD.customer_id
        OR NEW.currency <> OLD.currency
        OR NEW.period_start IS DISTINCT FROM OLD.period_start OR NEW.period_end IS DISTINCT FROM OLD.period_end
        OR NEW.subtotal <> OLD.subtotal OR NEW.tax_total <> OLD.tax_total OR NEW.total <> OLD.total
        OR NEW.credits_applied <> OLD.credits_applied OR NEW.amount_due <> OLD.amount_due
        OR NEW.issued_at IS DISTINCT FROM OLD.issued_at OR NEW.due_at IS DISTINCT FROM OLD.due_at
        OR NEW.memo <> OLD.memo OR NEW.status = 'draft'
    ) THEN
        RAISE EXCEPTION 'invoice_frozen: issued invoice % cannot change', OLD.number
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoice_frozen BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_frozen();

CREATE FUNCTION billing_invoiceline_frozen() RETURNS trigger AS $$
DECLARE
    invoice_status text;
BEGIN
    SELECT status INTO invoice_status FROM billing_invoice
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.invoice_id ELSE NEW.invoice_id END;
    IF invoice_status IS NOT NULL AND invoice_status <> 'draft' THEN
        RAISE EXCEPTION 'invoice_frozen: the lines of an issued invoice cannot change'
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.invoice_id <> NEW.invoice_id THEN
        SELECT status INTO invoice_status FROM billing_invoice WHERE id = OLD.invoice_id;
        IF invoice_status <> 'draft' THEN
            RAISE EXCEPTION 'invoice_frozen: the lines of an issued invoice cannot change'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_invoiceline_frozen BEFORE INSERT OR UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_frozen();
CREATE TRIGGER billing_invoicetax_frozen BEFORE INSERT OR UPDATE OR DELETE ON billing_invoicetax
    FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_frozen();

CREATE FUNCTION billing_creditnote_frozen() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.number <> OLD.number OR NEW.amount <> OLD.amount
       OR NEW.invoice_id <> OLD.invoice_id OR NEW.reason <> OLD.reason THEN
        RAISE EXCEPTION 'credit_note_frozen: credit note % cannot change', OLD.number
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER billing_creditnote_frozen BEFORE UPDATE OR DELETE ON billing_creditnote
    FOR EACH ROW EXECUTE FUNCTION billing_creditnote_frozen();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS billing_creditnote_frozen ON billing_creditnote;
DROP FUNCTION IF EXISTS billing_creditnote_frozen();
DROP TRIGGER IF EXISTS billing_invoicetax_frozen ON billing_invoicetax;
DROP TRIGGER IF EXISTS billing_invoiceline_frozen ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_frozen();
DROP TRIGGER IF EXISTS billing_invoice_frozen ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_frozen();
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_invoices")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
