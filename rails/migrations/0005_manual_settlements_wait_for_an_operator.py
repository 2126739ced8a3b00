"""Manual settlements already submitted had their next check scheduled ten years out
(the manual rail's old way of saying "never"); now nothing is scheduled for them and
the admin says they wait for an operator. Clear the made-up dates."""

from django.db import migrations


def clear_next_action(apps, schema_editor):
    Settlement = apps.get_model("rails", "Settlement")
    Settlement.objects.filter(rail="manual", state__in=["submitted", "collecting"]).update(
        next_action_at=None
    )


class Migration(migrations.Migration):
    dependencies = [
        ("rails", "0004_settlement_state_failed_label"),
    ]

    operations = [migrations.RunPython(clear_next_action, migrations.RunPython.noop)]
