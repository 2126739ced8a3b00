"""ACH in the admin: the files the export built (download, entries with their invoices
and returns), an "Export ACH file now" button and a return file upload.

Account numbers appear here only as ``****1234``; the clear numbers exist only inside
the downloaded NACHA file, which needs its own permission (``rails.download_achfile``,
the billing admin role's): viewing the files' pages is not downloading them. Registers
itself on import.
"""

from __future__ import annotations

import logging

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.money import from_minor_units
from rails.ach.crypto import AchDecryptionError, masked
from rails.ach.debits import ach_export_preview
from rails.ach.export import AchExportError, ach_export, ach_file_content
from rails.ach.returns import NachaParseError
from rails.ach.returns_apply import ach_returns_apply
from rails.adapters.ach import ach_is_sandbox
from rails.models_ach import AchFile, AchFileEntry

logger = logging.getLogger(__name__)
MAX_RETURN_FILE_BYTES = 10 * 1024 * 1024


def _usd(minor: int) -> str:
    return f"${from_minor_units(minor, 'USD'):,}"


def _admin_link(viewname: str, pk, text: str) -> str:
    try:
        return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), text)
    except NoReverseMatch:  # that model has no admin page
        return text


def _attachment(content: str, file_name: str) -> HttpResponse:
    response = HttpResponse(content.encode("ascii"), content_type="text/plain; charset=us-ascii")
    response["Content-Disposition"] = f'attachment; filename="{file_name}"'
    response["Cache-Control"] = "no-store"
    return response


class AchFileEntryInline(admin.TabularInline):
    model = AchFileEntry
    extra = 0
    max_num = 0
    can_delete = False
    fields = readonly_fields = (
        "trace_number",
        "invoice_link",
        "settlement_link",
        "amount",
        "sec_code",
        "routing_number",
        "account",
        "receiver_name",
        "returned",
        "change",
    )

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("settlement")

    @admin.display(description="Invoice")
    def invoice_link(self, entry: AchFileEntry) -> str:
        return _admin_link("admin:billing_invoice_change", entry.invoice_id, entry.invoice_number)

    @admin.display(description="Settlement")
    def settlement_link(self, entry: AchFileEntry) -> str:
        return _admin_link(
            "admin:rails_settlement_change", entry.settlement_id, entry.settlement.state
        )

    @admin.display(description="Amount")
    def amount(self, entry: AchFileEntry) -> str:
        return _usd(entry.amount_minor)

    @admin.display(description="Account")
    def account(self, entry: AchFileEntry) -> str:
        return masked(entry.account_last4)

    @admin.display(description="Return")
    def returned(self, entry: AchFileEntry) -> str:
        if entry.returned_at is None:
            return "—"
        return f"{entry.return_code} {entry.return_reason} ({entry.returned_at:%Y-%m-%d})"

    @admin.display(description="Notification of change")
    def change(self, entry: AchFileEntry) -> str:
        return f"{entry.change_code}: {entry.change_note}" if entry.change_code else "—"


class ReturnFileForm(forms.Form):
    file = forms.FileField(help_text="The NACHA return file from the bank.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_RETURN_FILE_BYTES:
            raise forms.ValidationError("That file is too large for a return file.")
        try:
            return upload.name, upload.read().decode("ascii")
        except UnicodeDecodeError:
            raise forms.ValidationError(
                "A NACHA file is plain ASCII text; this one is not."
            ) from None


@admin.register(AchFile)
class AchFileAdmin(admin.ModelAdmin):
    list_display = (
        "file_name",
        "created_at",
        "effective_date",
        "entry_count",
        "total",
        "mode",
        "download",
    )
    list_filter = ("sandbox", "effective_date")
    search_fields = ("file_name", "entries__invoice_number", "entries__trace_number")
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "file_name",
        "mode",
        "created_at",
        "created_by",
        "business_date",
        "file_id_modifier",
        "effective_date",
        "odfi_routing",
        "company_id",
        "entry_count",
        "total",
        "sha256",
        "path",
    )
    inlines = [AchFileEntryInline]
    change_list_template = "admin/rails/ach/change_list.html"
    change_form_template = "admin/rails/ach/change_form.html"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_download_permission(self, request) -> bool:
        return request.user.has_perm("rails.download_achfile")

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        return (
            shown
            if self.has_download_permission(request)
            else [name for name in shown if name != "download"]
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra = {"can_download": self.has_download_permission(request), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    @admin.display(description="Total debits")
    def total(self, ach_file: AchFile) -> str:
        return _usd(ach_file.total_debit_minor)

    @admin.display(description="Mode")
    def mode(self, ach_file: AchFile) -> str:
        return "Sandbox: placeholder originator, never upload" if ach_file.sandbox else "Live"

    @admin.display(description="File")
    def download(self, ach_file: AchFile) -> str:
        url = reverse("admin:rails_achfile_download", args=[ach_file.pk])
        return format_html('<a href="{}">Download</a>', url)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/download/", view(self.download_view), name="rails_achfile_download"),
            path("export/", view(self.export_view), name="rails_achfile_export"),
            path(
                "import-returns/",
                view(self.import_returns_view),
                name="rails_achfile_import_returns",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {
            "ach_sandbox": ach_is_sandbox(),
            "can_export": self._may_export(request),
            "can_import": request.user.has_perm("rails.change_achfileentry"),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)

    def _context(self, request, title: str, **extra) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "ach_sandbox": ach_is_sandbox(),
            **extra,
        }

    def _may_export(self, request) -> bool:
        # The export answers with the new file: making one is downloading one.
        return request.user.has_perm("rails.add_achfile") and self.has_download_permission(request)

    def download_view(self, request, pk: int):
        if not self.has_download_permission(request):
            raise PermissionDenied
        ach_file = get_object_or_404(AchFile, pk=pk)
        try:
            content = ach_file_content(ach_file)
        except AchDecryptionError as exc:
            messages.error(request, f"{ach_file.file_name}: {exc}.")
            return redirect("admin:rails_achfile_change", ach_file.pk)
        logger.info("ACH file %s downloaded by %s", ach_file.file_name, request.user.get_username())
        return _attachment(content, ach_file.file_name)

    def export_view(self, request):
        if not self._may_export(request):
            raise PermissionDenied
        changelist = reverse("admin:rails_achfile_changelist")
        if request.method != "POST":
            preview = ach_export_preview(now=timezone.now())
            context = self._context(request, "Export ACH file now", preview=preview)
            return TemplateResponse(request, "admin/rails/ach/export.html", context)
        try:
            result = ach_export(now=timezone.now(), actor=request.user.get_username())
        except AchExportError as exc:
            messages.error(request, str(exc))
            return redirect(changelist)
        if result is None:
            messages.info(request, "No ACH debit is due: no file was made.")
            return redirect(changelist)
        ach_file = AchFile.objects.get(pk=result.file_id)
        logger.info("ACH file %s exported by %s", ach_file.file_name, request.user.get_username())
        return _attachment(ach_file_content(ach_file), ach_file.file_name)

    def import_returns_view(self, request):
        if not request.user.has_perm("rails.change_achfileentry"):
            raise PermissionDenied
        form = ReturnFileForm(request.POST or None, request.FILES or None)
        report = None
        if request.method == "POST" and form.is_valid():
            name, content = form.cleaned_data["file"]
            try:
                report = ach_returns_apply(
                    content=content,
                    now=timezone.now(),
                    file_name=name,
                    actor=request.user.get_username(),
                )
            except NachaParseError as exc:
                form.add_error("file", f"Not a valid NACHA return file: {exc}")
            else:
                messages.success(request, report.summary)
        context = self._context(request, "Import an ACH return file", form=form, report=report)
        return TemplateResponse(request, "admin/rails/ach/import_returns.html", context)
