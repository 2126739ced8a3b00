"""Applying the ``notification_rules`` section. Part of ``backoffice.configuration.apply``; same
rules (create and update, never delete, errors named by their place in the file).

A rule names a feature, a customer and webhook endpoints by key: each must be in the
file or already stored. Rules are applied after everything else, so they can name what
the same file creates.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from backoffice.configuration.report import ApplyRun, kept_line, no_such
from billing.models import WebhookEndpoint
from billing.notifications.models import NotificationRule
from billing.notifications.thresholds import thresholds_validate
from customers.models import Customer
from customers.selectors import billing_account_ids
from metering.models import Feature

RULE_NAMES: dict[str, str | None] = {}


def _threshold_errors(path: str, exc: ValidationError) -> list[str]:
    # thresholds_validate names the item inside the list ("thresholds[1].amount: ...")
    out = []
    for message in exc.messages:
        if message.startswith("thresholds["):
            out.append(f"{path}.{message}")
        else:
            out.append(f"{path}.thresholds: {message[0].lower()}{message[1:]}")
    return out


class NotificationRuleApplier:
    def __init__(self, run: ApplyRun, items: list[dict]) -> None:
        self.run = run
        self.items = items
        self.thresholds: dict[int, list[dict]] = {}  # by position: normalised

    def check(self, *, features: set[str], endpoints: set[str], customers: set[str]) -> None:
        """Checks before any write: keys given once, thresholds of the rule's kind,
        references to features, endpoints and customers that exist."""
        first: dict[str, int] = {}
        for i, item in enumerate(self.items):
            path = f"notification_rules[{i}]"
            if item["key"] in first:
                self.run.error(
                    f"{path}.key",
                    f"'{item['key']}' appears twice (also notification_rules[{first[item['key']]}]).",
                )
            first.setdefault(item["key"], i)
            try:
                self.thresholds[i] = thresholds_validate(
                    kind=item["kind"], thresholds=item["thresholds"]
                )
            except ValidationError as exc:
                self.run.errors += _threshold_errors(path, exc)
            if "feature" in item and item["feature"] not in features:
                self.run.error(f"{path}.feature", no_such("feature", item["feature"], features))
            if "customer" in item and item["customer"] not in customers:
                self.run.error(f"{path}.customer", no_such("customer", item["customer"], customers))
            for j, key in enumerate(item.get("endpoints", [])):
                if key not in endpoints:
                    self.run.error(
                        f"{path}.endpoints[{j}]", no_such("webhook endpoint", key, endpoints)
                    )

    def apply(self) -> None:
        for i, item in enumerate(self.items):
            if i in self.thresholds:
                self._rule(f"notification_rules[{i}]", item, self.thresholds[i])

    def _rule(self, path: str, item: dict, thresholds: list[dict]) -> None:
        key = item["key"]
        feature = customer = None
        if "feature" in item:
            feature = Feature.objects.filter(key=item["feature"]).first()
        if "customer" in item:
            customer = Customer.objects.filter(key=item["customer"]).first()
            if customer is not None:
                account_id = billing_account_ids(customer_ids=[customer.pk])[customer.pk]
                if account_id != customer.pk:
                    account = Customer.objects.get(pk=account_id)
                    self.run.error(
                        f"{path}.customer",
                        f"{customer.key} is billed on {account.key}: a rule watches a billing "
                        f"account; name {account.key}.",
                    )
                    return
        endpoints = list(WebhookEndpoint.objects.filter(key__in=item.get("endpoints", [])))
        if ("feature" in item and feature is None) or ("customer" in item and customer is None):
            return  # failed to apply earlier in this run: reported there
        if len(endpoints) != len(set(item.get("endpoints", []))):
            return  # likewise
        fields = {
            "kind": item["kind"],
            "feature": feature,
            "customer": customer,
            "thresholds": thresholds,
            "enabled": item.get("enabled", True),
        }
        endpoint_keys = sorted(e.key for e in endpoints)
        rule = NotificationRule.objects.filter(key=key).first()
        if rule is None:
            changed = [*fields, "endpoints"]
        else:
            changed = [n for n, v in fields.items() if getattr(rule, n) != v]
            if sorted(rule.endpoints.values_list("key", flat=True)) != endpoint_keys:
                changed.append("endpoints")
        if not changed:
            return

        def save() -> NotificationRule:
            target = rule or NotificationRule(key=key)
            for name, value in fields.items():
                setattr(target, name, value)
            target.full_clean()
            target.save()
            target.endpoints.set(endpoints)
            return target

        if self.run.attempt(path, save, RULE_NAMES) is not None:
            if rule is None:
                self.run.change("+", f"notification rule {key}")
            else:
                self.run.change("~", f"notification rule {key}: {', '.join(changed)}")

    def kept(self) -> list[str]:
        in_file = [item["key"] for item in self.items]
        keys = NotificationRule.objects.exclude(key__in=in_file).order_by("key")
        return kept_line("notification rules", list(keys.values_list("key", flat=True)))
