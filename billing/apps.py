from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        import billing.entitlements.cache as entitlement_cache

        entitlement_cache.connect()  # every change to a check's inputs moves its cache on
