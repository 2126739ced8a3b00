"""A bank account number is money data whatever the customer's rail: encrypted at rest
(also when stored in clear before), masked in the API, the admin, exports and logs, and
kept as it was when the mask comes back."""

from __future__ import annotations

import importlib
import io
import json
import logging

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from customers.models import Customer
from customers.services import customer_create, customer_update
from rails.adapters.ach import ach_account_number

CLEAR = "000123456789"
MASK = "****6789"
ACH = {
    "routing_number": "021000021",
    "account_type": "checking",
    "mandate_date": "2026-09-15",
}

pytestmark = pytest.mark.django_db


def stored(customer: Customer) -> dict:
    return Customer.objects.get(pk=customer.pk).rail_settings


def customer_with_number(rail: str = "stripe", key: str = "hooli", **extra) -> Customer:
    settings_ = {"account_number": CLEAR, **extra}
    if rail == "ach":
        settings_ |= ACH
    return customer_create(key=key, name=key.title(), rail=rail, rail_settings=settings_)


def assert_no_clear_number(text: str) -> None:
    assert CLEAR not in text and "123456789" not in text


@pytest.mark.parametrize(
    ("rail", "extra"),
    [
        ("stripe", {"stripe_customer_id": "cus_Q1"}),
        ("netsuite", {"netsuite_entity_id": "1234"}),
        ("manual", {}),
        ("ach", {}),
    ],
)
def test_an_account_number_is_encrypted_at_rest_whatever_the_rail(rail, extra):
    customer = customer_with_number(rail, **extra)

    settings_ = stored(customer)
    assert "account_number" not in settings_ and settings_["account_last4"] == "6789"
    assert_no_clear_number(json.dumps(settings_))
    assert ach_account_number(settings_) == CLEAR  # the ciphertext reads back with the keys
    assert {k: settings_[k] for k in extra} == extra


def test_the_api_shows_the_number_masked_and_the_mask_sent_back_keeps_it(api):
    response = api.post(
        "/api/v1/customers",
        {
            "key": "hooli",
            "name": "Hooli",
            "rail": "stripe",
            "rail_settings": {"stripe_customer_id": "cus_Q1", "account_number": CLEAR},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["rail_settings"] == {
        "stripe_customer_id": "cus_Q1",
        "account_number": MASK,
        "account_last4": "6789",
    }
    token = stored(Customer.objects.get(key="hooli"))["account_number_encrypted"]
    read = api.get("/api/v1/customers/hooli")
    assert_no_clear_number(read.content.decode())
    assert token not in read.content.decode()

    # a client that sends back what it read keeps the stored number, ciphertext and all
    again = api.patch(
        "/api/v1/customers/hooli",
        {"name": "Hooli XYZ", "rail_settings": read.json()["rail_settings"]},
        format="json",
    )
    assert again.status_code == 200, again.json()
    assert stored(Customer.objects.get(key="hooli"))["account_number_encrypted"] == token

    wrong = api.patch(
        "/api/v1/customers/hooli", {"rail_settings": {"account_number": "****1111"}}, format="json"
    )
    assert wrong.status_code == 400
    assert "masked value that matches no stored account number" in wrong.content.decode()
    assert stored(Customer.objects.get(key="hooli"))["account_number_encrypted"] == token


def test_a_mask_keeps_the_number_when_the_rail_changes(db):
    customer = customer_with_number("stripe")
    token = stored(customer)["account_number_encrypted"]

    customer_update(customer=customer, rail="ach", rail_settings={"account_number": MASK, **ACH})

    settings_ = stored(customer)
    assert settings_["account_number_encrypted"] == token and settings_["account_last4"] == "6789"
    assert ach_account_number(settings_) == CLEAR


def test_a_bad_number_is_refused_without_echoing_it(db):
    with pytest.raises(ValidationError) as refused:
        customer_create(
            key="hooli", name="Hooli", rail="stripe", rail_settings={"account_number": "12$45!"}
        )
    assert "12$45!" not in str(refused.value.message_dict)
    with pytest.raises(ValidationError, match="must be text"):
        customer_create(
            key="hooli", name="Hooli", rail="manual", rail_settings={"account_number": 123456789}
        )


def test_the_admin_shows_the_mask_and_saving_the_form_as_shown_keeps_the_number(admin_client):
    customer = customer_with_number("stripe", stripe_customer_id="cus_Q1")
    token = stored(customer)["account_number_encrypted"]
    url = reverse("admin:customers_customer_change", args=[customer.pk])

    page = admin_client.get(url).content.decode()
    assert MASK in page
    assert_no_clear_number(page)
    assert token not in page

    shown = json.dumps(
        {"stripe_customer_id": "cus_Q1", "account_last4": "6789", "account_number": MASK}
    )
    form = {
        "key": "hooli",
        "name": "Hooli Inc.",
        "email": "",
        "currency": "USD",
        "timezone": "UTC",
        "rail": "stripe",
        "rail_settings": shown,
        **{f: "" for f in ("address_line1", "address_line2", "city", "region", "postal_code")},
        **{f: "" for f in ("country", "tax_id")},
        "consumer_mappings-TOTAL_FORMS": "0",
        "consumer_mappings-INITIAL_FORMS": "0",
        "subsidiaries-TOTAL_FORMS": "0",
        "subsidiaries-INITIAL_FORMS": "0",
    }
    assert admin_client.post(url, form).status_code == 302
    assert stored(customer)["account_number_encrypted"] == token
    assert Customer.objects.get(pk=customer.pk).name == "Hooli Inc."

    history = admin_client.get(
        reverse("admin:audit_history", args=["customers", "customer", customer.pk])
    ).content.decode()
    assert_no_clear_number(history)
    assert token not in history


def test_billing_export_never_prints_a_clear_number_and_applies_back_unchanged(tmp_path):
    customer = customer_with_number("stripe", stripe_customer_id="cus_Q1")
    # one saved in clear while nothing encrypted it (before this release, or the hook off)
    legacy = customer_with_number("manual", key="legacy")
    Customer.objects.filter(pk=legacy.pk).update(rail_settings={"account_number": "999988887777"})

    path = tmp_path / "export.yaml"
    call_command("billing_export", "--out", str(path), stderr=io.StringIO())
    text = path.read_text()

    assert_no_clear_number(text)
    assert "999988887777" not in text
    assert stored(customer)["account_number_encrypted"] in text
    out = io.StringIO()
    call_command("billing_apply", str(path), stdout=out, stderr=io.StringIO())
    assert "customer hooli" not in out.getvalue()  # nothing to change for it
    assert "account_number" not in stored(legacy)  # the legacy one is encrypted on the way
    assert ach_account_number(stored(legacy)) == "999988887777"


def test_numbers_stored_in_clear_before_are_encrypted_by_the_migration(db):
    customer = customer_with_number("stripe", key="old")
    old = {"account_number": CLEAR, "stripe_customer_id": "cus_Q1"}
    Customer.objects.filter(pk=customer.pk).update(rail_settings=old)
    History = apps.get_model("audit", "HistoricalCustomer")
    History.objects.filter(id=customer.pk).update(rail_settings=old)
    migration = importlib.import_module("rails.migrations.0007_bank_account_numbers_encrypted")

    migration.account_numbers_encrypt(apps, None)

    for settings_ in [
        stored(customer),
        *History.objects.filter(id=customer.pk).values_list("rail_settings", flat=True),
    ]:
        assert_no_clear_number(json.dumps(settings_))
        assert settings_["account_last4"] == "6789" and settings_["stripe_customer_id"] == "cus_Q1"
        assert ach_account_number(settings_) == CLEAR


def test_rotating_the_keys_re_encrypts_every_rails_numbers(settings):
    settings.ACH_ENCRYPTION_KEY = "old-secret"
    customer = customer_with_number("stripe")
    before = stored(customer)["account_number_encrypted"]
    settings.ACH_ENCRYPTION_KEY = "new-secret,old-secret"

    call_command("ach_encryption_rotate", stdout=io.StringIO())

    after = stored(customer)["account_number_encrypted"]
    assert after != before
    settings.ACH_ENCRYPTION_KEY = "new-secret"
    assert ach_account_number(stored(customer)) == CLEAR


def test_saving_logs_no_clear_number(caplog):
    caplog.set_level(logging.DEBUG)
    customer = customer_with_number("netsuite", netsuite_entity_id="1234")
    customer_update(customer=customer, name="Hooli Two")
    assert_no_clear_number(caplog.text)
