from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The example data set that ``bin/demo`` loads. Depends on every domain app."""

    name = "demo"
    verbose_name = "Demo data"
