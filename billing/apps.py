from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Registers billing's Celery tasks in every process (the web's too), so a service
        # sends a task by its name without importing the module that calls it back.
        import billing.entitlements.cache as entitlement_cache
        import billing.tasks  # noqa: F401

        entitlement_cache.connect()  # every change to a check's inputs moves its cache on
