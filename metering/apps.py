from django.apps import AppConfig
from django.db.models.signals import post_migrate


class MeteringConfig(AppConfig):
    name = "metering"
    verbose_name = "Metering"

    def ready(self) -> None:
        from metering.usage.memories import database_generation_bump_after_migrate

        # sent once per app by every migrate and flush: this app's is enough
        post_migrate.connect(
            database_generation_bump_after_migrate,
            sender=self,
            dispatch_uid="metering-usage:migrate",
            weak=False,
        )
