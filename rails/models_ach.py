"""ACH files: each NACHA file the export built, and its entries, each linked to the
settlement (and invoice) it debits, by the trace number that return files quote.

Imported at the end of ``rails/models.py`` so Django finds these models in the rails app.
The file's text carries clear account numbers, so it is stored encrypted
(``rails.ach.crypto``); entries keep only the last four digits.
"""

from __future__ import annotations

from django.db import models


class AchFile(models.Model):
    file_name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(help_text="When the export built the file.")
    business_date = models.DateField(
        help_text="The ACH calendar day (ACH_TIME_ZONE) the file was made: its file id modifier "
        "is unique on that day."
    )
    file_id_modifier = models.CharField(max_length=1)
    effective_date = models.DateField(help_text="The day its debits settle (the debit date).")
    sandbox = models.BooleanField(
        default=False,
        help_text="Built without the bank's details (placeholder originator): never upload it.",
    )
    odfi_routing = models.CharField("ODFI routing number", max_length=9)
    company_id = models.CharField(max_length=10)
    entry_count = models.PositiveIntegerField()
    total_debit_minor = models.PositiveBigIntegerField(help_text="In cents.")
    sha256 = models.CharField("SHA-256", max_length=64, help_text="Of the file's bytes.")
    content_encrypted = models.TextField(editable=False)
    path = models.CharField(max_length=1000, blank=True, help_text="Where the export wrote it.")
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "ACH file"
        constraints = [
            models.UniqueConstraint(
                fields=["business_date", "file_id_modifier"], name="ach_file_modifier_once_a_day"
            )
        ]

    def __str__(self) -> str:
        return self.file_name


class AchFileEntry(models.Model):
    """One debit in a file. A settlement is exported at most once: the constraint, not
    the export's lock, is what keeps an invoice from being debited twice."""

    file = models.ForeignKey(AchFile, on_delete=models.PROTECT, related_name="entries")
    settlement = models.OneToOneField(
        "rails.Settlement", on_delete=models.PROTECT, related_name="ach_entry"
    )
    invoice = models.ForeignKey("billing.Invoice", on_delete=models.PROTECT, related_name="+")
    invoice_number = models.CharField(max_length=40)
    trace_number = models.CharField(max_length=15, unique=True)
    trace_sequence = models.PositiveIntegerField(
        help_text="The trace number's last 7 digits: one counter across all files."
    )
    batch_number = models.PositiveIntegerField()
    sec_code = models.CharField("SEC code", max_length=3)
    transaction_code = models.CharField(max_length=2)
    amount_minor = models.PositiveBigIntegerField(help_text="In cents.")
    routing_number = models.CharField(max_length=9)
    account_last4 = models.CharField(max_length=4)
    receiver_name = models.CharField(max_length=22)
    returned_at = models.DateTimeField(null=True, blank=True)
    return_code = models.CharField(max_length=3, blank=True)
    return_reason = models.CharField(max_length=300, blank=True)
    return_file_name = models.CharField(max_length=255, blank=True)
    change_code = models.CharField(
        max_length=3,
        blank=True,
        help_text="Notification of change (C01...): update the bank details.",
    )
    change_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["file", "trace_number"]
        verbose_name = "ACH file entry"
        verbose_name_plural = "ACH file entries"

    def __str__(self) -> str:
        return f"{self.trace_number} ({self.invoice_number})"
