"""Settings for every environment, read from the environment (twelve-factor).

``DJANGO_SETTINGS_MODULE=config.settings`` serves development, the demo and the tests;
``config.settings.production`` adds the hardening that ``manage.py check --deploy``
asks for.
"""

from .base import *  # noqa: F401,F403
