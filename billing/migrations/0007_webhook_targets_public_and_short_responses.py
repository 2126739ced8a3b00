# Webhook endpoints must be public addresses (core.outbound), and a delivery keeps only the
# first 200 characters of the receiver's answer: answers stored before are cut to that.

import core.outbound
from django.db import migrations, models
from django.db.models.functions import Left

RESPONSE_KEEP = 200


def responses_truncate(apps, schema_editor):
    WebhookDelivery = apps.get_model("billing", "WebhookDelivery")
    WebhookDelivery.objects.annotate(
        length=models.functions.Length("response_body")
    ).filter(length__gt=RESPONSE_KEEP).update(response_body=Left("response_body", RESPONSE_KEEP))


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0006_credits_notifications'),
    ]

    operations = [
        migrations.AlterField(
            model_name='webhookdelivery',
            name='response_body',
            field=models.TextField(blank=True, help_text="The first 200 characters of the last response (a receiver's page is not the product's to keep)."),
        ),
        migrations.AlterField(
            model_name='webhookendpoint',
            name='url',
            field=models.URLField(help_text='A public http(s) URL. Private addresses need NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE=true.', max_length=500, validators=[core.outbound.PublicUrlValidator('NOTIFICATION_WEBHOOKS_ALLOW_PRIVATE')]),
        ),
        migrations.RunPython(responses_truncate, migrations.RunPython.noop, elidable=True),
    ]
