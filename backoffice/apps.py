from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"
    default = True  # the app's own config; the admin's is named in INSTALLED_APPS


class BackofficeAdminConfig(admin_apps.AdminConfig):
    """``django.contrib.admin`` with the back office's site as ``admin.site`` (Django's
    documented way to replace the default site)."""

    default = False
    default_site = "backoffice.sites.BackofficeSite"
