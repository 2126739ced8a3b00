"""Rail webhooks, mounted under ``/webhooks/`` (``path("webhooks/", include("rails.urls"))``)."""

from django.urls import path

from rails.webhooks import stripe_webhook

urlpatterns = [
    path("stripe", stripe_webhook, name="rails-stripe-webhook"),
]
