"""How Django writes dates in the admin: one format, the one its own pages use
(``2026-11-02 09:00``, in UTC), instead of English prose ("Nov. 2, 2026, 9 a.m.") for
the fields Django renders itself. Customer documents write their dates themselves, in
the customer's time zone (``billing.display``); only what is set here changes."""

DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
