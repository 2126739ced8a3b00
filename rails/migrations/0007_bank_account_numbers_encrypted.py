# A bank account number is encrypted at rest whatever the customer's rail: until now only
# the ACH rail encrypted it, so a Stripe, NetSuite or manual customer's account_number
# (and an ACH one saved before its rail encrypted) sat in clear, in the customer and in
# its audit history rows. Encrypt those values as the rails' settings hook stores them:
# account_number_encrypted (Fernet, rails.ach.crypto) beside account_last4.

from django.db import migrations

from rails.ach.crypto import encrypt_text


def _protected(settings):
    if not isinstance(settings, dict) or "account_number" not in settings:
        return None
    clear = settings["account_number"]
    protected = {k: v for k, v in settings.items() if k != "account_number"}
    if clear in (None, ""):
        return protected
    number = str(clear).strip()
    last4 = "".join(ch for ch in number if ch.isalnum())[-4:]
    return protected | {"account_number_encrypted": encrypt_text(number), "account_last4": last4}


def _encrypt_rows(model) -> None:
    rows = model.objects.filter(rail_settings__has_key="account_number")
    for pk, settings in rows.values_list("pk", "rail_settings").iterator():
        protected = _protected(settings)
        if protected is not None:
            model.objects.filter(pk=pk).update(rail_settings=protected)


def account_numbers_encrypt(apps, schema_editor):
    _encrypt_rows(apps.get_model("customers", "Customer"))
    _encrypt_rows(apps.get_model("audit", "HistoricalCustomer"))


class Migration(migrations.Migration):

    dependencies = [
        ('rails', '0006_rail_named_as_the_product_spells_it'),
        ('customers', '0004_top_level_not_billed_to_parent'),
        ('audit', '0002_historicalcustomer_bill_to_parent_default'),
    ]

    operations = [
        # Not reversible into clear text: going back leaves the values encrypted.
        migrations.RunPython(account_numbers_encrypt, migrations.RunPython.noop, elidable=True),
    ]
