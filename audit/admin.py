"""The audit trail in the admin, on the back office's admin site (``backoffice.sites``):

- ``/admin/audit/history/`` (``admin:audit_recent``): the latest changes to customers,
  consumer mappings, plans, plan versions, rate cards, invoices and invoice lines;
- ``/admin/audit/history/<app>/<model>/<pk>/`` (``admin:audit_history``): one object's
  history with what hangs off it, field by field, with who made each change.

The models themselves keep their own admins (owned by their apps); these are plain admin
views that the site routes. Each needs the ``view`` permission of the model shown.
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse

from audit.history import (
    AUDITED_MODELS,
    audited_model,
    object_history,
    object_last_repr,
    recent_changes,
)

PER_PAGE = 50


def _can_view(request, model) -> bool:
    opts = model._meta
    return request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}")


def change_url(model, pk) -> str | None:
    """The object's admin page, or None (it has none)."""
    opts = model._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    except NoReverseMatch:
        return None


def history_url(model, pk) -> str:
    opts = model._meta
    return reverse("admin:audit_history", args=[opts.app_label, opts.model_name, pk])


def _rows(entries) -> list[dict]:
    return [
        {
            "entry": e,
            "object_url": change_url(e.model, e.object_id),
            "history_url": history_url(e.model, e.object_id),
        }
        for e in entries
    ]


def history_view(request, app_label: str, model_name: str, pk: str):
    model = audited_model(app_label=app_label, model_name=model_name)
    if model is None:
        raise Http404("No history is kept for that model.")
    if not _can_view(request, model):
        raise PermissionDenied
    try:
        pk = model._meta.pk.to_python(pk)
    except ValidationError as exc:
        raise Http404("No such object.") from exc
    obj = model._default_manager.filter(pk=pk).first()
    name = str(obj) if obj is not None else object_last_repr(model=model, pk=pk)
    if name is None:
        raise Http404("No such object, and no history of it.")
    page = Paginator(object_history(model=model, pk=pk), PER_PAGE).get_page(request.GET.get("p"))
    context = {
        **admin.site.each_context(request),
        "title": f"Change history of {model._meta.verbose_name} {name}",
        "opts": model._meta,
        "object": obj,
        "object_name": name,
        "object_url": change_url(model, pk) if obj is not None else None,
        "page": page,
        "rows": _rows(page),
    }
    return TemplateResponse(request, "admin/audit/history.html", context)


def recent_view(request):
    visible = [m for m in AUDITED_MODELS if _can_view(request, m)]
    if not visible:
        raise PermissionDenied
    chosen = request.GET.get("model", "")
    shown = [m for m in visible if m._meta.model_name == chosen] or visible
    context = {
        **admin.site.each_context(request),
        "title": "Recent changes",
        "rows": _rows(recent_changes(models_=shown, limit=200)),
        "models": [(m._meta.model_name, m._meta.verbose_name_plural) for m in visible],
        "chosen": chosen if len(shown) == 1 else "",
    }
    return TemplateResponse(request, "admin/audit/recent.html", context)
