from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from customers import services
from customers.models import (
    BILL_TO_PARENT_NEEDS_PARENT,
    CUSTOMER_ADDRESS_FIELDS,
    CUSTOMER_FIELDS,
    CUSTOMER_LOCALE_FIELDS,
    CUSTOMER_NAME_FIELDS,
    CUSTOMER_RAIL_FIELDS,
    CUSTOMER_RECORD_FIELDS,
    CUSTOMER_TREE_FIELDS,
    ConsumerMapping,
    Customer,
    rail_choices,
)
from customers.rail_settings import rail_settings_shown
from customers.selectors import (
    billed_customer_ids_many,
    billing_account_ids,
    customer_billing_account,
    customer_tree,
)


class CustomerForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = list(CUSTOMER_FIELDS)

    def __init__(self, *args, initial=None, **kwargs):
        super().__init__(*args, initial=initial, **kwargs)
        # A bank account number shows as ****6789 (never the number or its ciphertext);
        # the mask saved back stands for the stored number (customers.rail_settings).
        self.initial["rail_settings"] = rail_settings_shown(self.initial.get("rail_settings"))
        if self.instance._state.adding and "bill_to_parent" not in (initial or {}):
            # On, as for a subsidiary; a new customer left without a parent is saved with
            # it off (clean). Also the initial value its POST is compared with.
            self.initial["bill_to_parent"] = True

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("rail") and isinstance(cleaned.get("rail_settings"), dict):
            try:
                cleaned["rail_settings"] = services.rail_settings_clean(
                    customer=self.instance,
                    rail=cleaned["rail"],
                    rail_settings=cleaned["rail_settings"],
                )
            except ValidationError as exc:
                self.add_error("rail_settings", exc.messages)
        if self.instance.pk and "parent" in cleaned:
            try:
                services.customer_parent_validate(
                    customer=self.instance, parent=cleaned.get("parent")
                )
            except ValidationError as exc:
                self.add_error("parent", exc.message_dict["parent"])
        if "parent" in cleaned and cleaned["parent"] is None and cleaned.get("bill_to_parent"):
            if "bill_to_parent" in self.changed_data:
                self.add_error("bill_to_parent", BILL_TO_PARENT_NEEDS_PARENT)
            else:
                # Left as it was: on, the default a new customer's form shows for a
                # subsidiary, or what a subsidiary that lost its parent had. A customer
                # without a parent is billed on its own.
                cleaned["bill_to_parent"] = False
        return cleaned


class ConsumerMappingForm(forms.ModelForm):
    class Meta:
        model = ConsumerMapping
        fields = ["consumer_key", "customer", "valid_from", "valid_to"]

    def clean(self):
        cleaned = super().clean()
        key, start = cleaned.get("consumer_key"), cleaned.get("valid_from")
        if key and start:
            try:
                services.consumer_mapping_validate(
                    consumer_key=key,
                    valid_from=start,
                    valid_to=cleaned.get("valid_to"),
                    exclude_pk=self.instance.pk,
                )
            except ValidationError as exc:
                for field, errors in exc.error_dict.items():
                    self.add_error(field, errors)
        return cleaned

    def validate_constraints(self, exclude=None):  # the clean() above names the conflict instead
        pass


class ConsumerMappingInline(admin.TabularInline):
    model = ConsumerMapping
    form = ConsumerMappingForm
    fields = ["consumer_key", "valid_from", "valid_to"]
    extra = 0
    ordering = ["consumer_key", "valid_from"]
    verbose_name = "consumer key"
    verbose_name_plural = "consumer keys (gateway subjects), with their validity"


class SubsidiaryInline(admin.TabularInline):
    model = Customer
    fk_name = "parent"
    fields = ["link", "name", "bill_to_parent", "rail_settled_on"]
    readonly_fields = ["link", "name", "bill_to_parent", "rail_settled_on"]
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name = "subsidiary"
    verbose_name_plural = "direct subsidiaries"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="key")
    def link(self, obj: Customer):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[obj.pk]),
            obj.key,
        )

    @admin.display(description="rail")
    def rail_settled_on(self, obj: Customer) -> str:
        return settles_on(obj, customer_billing_account(customer=obj))


def settles_on(customer: Customer, account: Customer) -> str:
    """The rail ``customer``'s invoices settle on: its billing ``account``'s (a subsidiary
    billed to its parent has a rail field of its own, unused)."""
    if account.pk == customer.pk:
        return account.get_rail_display()
    return f"{account.get_rail_display()} (via {account.name})"


class SettlesOnFilter(admin.SimpleListFilter):
    """Customers by the rail their invoices settle on: a billing account's own rail, and
    the same for every subsidiary billed on it."""

    title = "rail"
    parameter_name = "settles_on"

    def lookups(self, request, model_admin):
        return rail_choices()

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        accounts = Customer.objects.filter(rail=self.value()).filter(
            Q(parent__isnull=True) | Q(bill_to_parent=False)
        )
        billed = billed_customer_ids_many(account_ids=accounts.values_list("pk", flat=True))
        return queryset.filter(pk__in=[i for ids in billed.values() for i in ids])


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    form = CustomerForm
    list_display = [
        "key",
        "name",
        "place_in_tree",
        "billing_account",
        "rail_settled_on",
        "currency",
        "timezone",
    ]
    list_filter = [SettlesOnFilter, "currency", ("parent", admin.EmptyFieldListFilter)]
    list_select_related = ["parent"]
    ordering = ["name", "key"]
    search_fields = ["key", "name", "consumer_mappings__consumer_key"]
    autocomplete_fields = ["parent"]
    readonly_fields = ["tree", *CUSTOMER_RECORD_FIELDS]
    inlines = [ConsumerMappingInline, SubsidiaryInline]
    fieldsets = [
        (None, {"fields": [*CUSTOMER_NAME_FIELDS, *CUSTOMER_LOCALE_FIELDS]}),
        ("Company tree", {"fields": [*CUSTOMER_TREE_FIELDS, "tree"]}),
        ("Postal address and tax", {"fields": list(CUSTOMER_ADDRESS_FIELDS)}),
        (
            "Settlement",
            {
                "fields": list(CUSTOMER_RAIL_FIELDS),
                "description": "A bank account_number is stored encrypted, whatever the "
                "rail, and shown as ****6789: leave the mask to keep it, or type the full "
                "number to change it.",
            },
        ),
        ("Record", {"fields": list(CUSTOMER_RECORD_FIELDS), "classes": ["collapse"]}),
    ]

    def save_model(self, request, obj, form, change):
        # through the service: rail settings are validated and encrypted as in the API
        services.customer_save(customer=obj)

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        return queryset, True

    def get_changelist_instance(self, request):
        cl = super().get_changelist_instance(request)
        ids = [c.pk for c in cl.result_list]
        accounts = billing_account_ids(customer_ids=ids)
        by_id = Customer.objects.only("key", "name", "rail").in_bulk(set(accounts.values()))
        for customer in cl.result_list:
            customer.settling_account = by_id.get(accounts.get(customer.pk), customer)
        return cl

    @admin.display(description="place in tree")
    def place_in_tree(self, obj: Customer) -> str:
        if obj.parent_id is None:
            return "top level"
        return f"under {obj.parent.key}"

    @admin.display(description="billed on")
    def billing_account(self, obj: Customer) -> str:
        return getattr(obj, "settling_account", obj).key

    @admin.display(description="rail")
    def rail_settled_on(self, obj: Customer) -> str:
        return settles_on(obj, getattr(obj, "settling_account", obj))

    @admin.display(description="tree")
    def tree(self, obj: Customer):
        if obj.pk is None:
            return "—"
        rows = [
            {
                **vars(row),
                "current": row.customer.pk == obj.pk,
                "url": reverse("admin:customers_customer_change", args=[row.customer.pk]),
            }
            for row in customer_tree(customer=obj)
        ]
        return render_to_string("admin/customers/customer/tree.html", {"rows": rows})

    def save_formset(self, request, form, formset, change):
        if formset.model is ConsumerMapping:
            instances = formset.save(commit=False)
            for obj in formset.deleted_objects:
                services.consumer_mapping_delete(mapping=obj)
            for mapping in instances:
                mapping.customer = form.instance
                services.consumer_mapping_update(mapping=mapping)
            return
        super().save_formset(request, form, formset, change)


class ConsumerKeyMoveForm(forms.Form):
    consumer_key = forms.CharField(max_length=255)
    to_customer = forms.ModelChoiceField(
        queryset=Customer.objects.order_by("key"), label="Move to customer"
    )
    at = forms.DateTimeField(
        label="From (UTC)",
        help_text="The old mapping ends and the new one starts at this instant. Format: 2026-11-01 00:00:00.",
    )


class ValidityFilter(admin.SimpleListFilter):
    title = "validity"
    parameter_name = "validity"

    def lookups(self, request, model_admin):
        return [("current", "Valid now"), ("ended", "Ended"), ("future", "Starts later")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "current":
            return queryset.filter(valid_from__lte=now).filter(
                Q(valid_to__isnull=True) | Q(valid_to__gt=now)
            )
        if self.value() == "ended":
            return queryset.filter(valid_to__lte=now)
        if self.value() == "future":
            return queryset.filter(valid_from__gt=now)
        return queryset


@admin.register(ConsumerMapping)
class ConsumerMappingAdmin(admin.ModelAdmin):
    form = ConsumerMappingForm
    list_display = ["consumer_key", "customer_link", "valid_from", "valid_to"]
    list_select_related = ["customer"]
    list_filter = [ValidityFilter]
    search_fields = ["consumer_key", "customer__key", "customer__name"]
    autocomplete_fields = ["customer"]
    date_hierarchy = "valid_from"
    actions = ["move_to_another_customer"]
    change_list_template = "admin/customers/consumermapping/change_list.html"

    @admin.display(description="customer", ordering="customer__key")
    def customer_link(self, obj: ConsumerMapping):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:customers_customer_change", args=[obj.customer_id]),
            obj.customer.key,
        )

    def save_model(self, request, obj, form, change):
        if change:
            services.consumer_mapping_update(mapping=obj)
        else:
            saved = services.consumer_mapping_create(
                consumer_key=obj.consumer_key,
                customer=obj.customer,
                valid_from=obj.valid_from,
                valid_to=obj.valid_to,
            )
            obj.pk = saved.pk

    def get_urls(self):
        return [
            path(
                "move/",
                self.admin_site.admin_view(self.move_view),
                name="customers_consumermapping_move",
            ),
            *super().get_urls(),
        ]

    @admin.action(description="Move the selected consumer key to another customer…")
    def move_to_another_customer(self, request, queryset):
        keys = sorted(set(queryset.values_list("consumer_key", flat=True)))
        if len(keys) != 1:
            self.message_user(
                request, "Select mappings of exactly one consumer key to move it.", messages.WARNING
            )
            return None
        return redirect(f"{reverse('admin:customers_consumermapping_move')}?consumer_key={keys[0]}")

    def move_view(self, request):
        if not self.has_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        initial = {
            "consumer_key": request.GET.get("consumer_key", ""),
            "at": timezone.now().replace(microsecond=0),
        }
        form = ConsumerKeyMoveForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                mapping = services.consumer_key_move(
                    consumer_key=form.cleaned_data["consumer_key"],
                    to_customer=form.cleaned_data["to_customer"],
                    at=form.cleaned_data["at"],
                )
            except ValidationError as exc:
                for messages_ in (
                    exc.message_dict.values() if hasattr(exc, "error_dict") else [exc.messages]
                ):
                    for message in messages_:
                        form.add_error(None, message)
            else:
                self.message_user(request, f"Moved: {mapping}.", messages.SUCCESS)
                return redirect(
                    f"{reverse('admin:customers_consumermapping_changelist')}?q={mapping.consumer_key}"
                )
        history = ConsumerMapping.objects.select_related("customer").filter(
            consumer_key=form["consumer_key"].value() or ""
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Move a consumer key to another customer",
            "form": form,
            "history": history,
            "opts": self.model._meta,
        }
        return render(request, "admin/customers/consumermapping/move.html", context)
