from django.apps import AppConfig


class RailsConfig(AppConfig):
    name = "rails"
    verbose_name = "Settlement rails"

    def ready(self) -> None:
        # Registers rails' Celery tasks in every process (the web's too), so the outbox
        # sends a drive task by its name without importing the module that calls it back.
        import rails.tasks  # noqa: F401
