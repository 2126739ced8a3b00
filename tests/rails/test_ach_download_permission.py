"""A NACHA file holds customers' account numbers in clear: downloading one (or exporting,
which answers with the new file) needs ``rails.download_achfile``, which only the billing
admin role holds. Viewers and operators see the files' pages, masked, and get 403."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

import rails.admin_ach  # noqa: F401  (registers the ACH admin before the URLs load)
from audit.roles import ADMIN, OPERATOR, VIEWER, roles_sync
from rails.ach.export import ach_export
from rails.models_ach import AchFile
from tests.rails.test_ach_rail import CLEAR, EXPORT, ach_customer, issue, scheduled

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def ach_sandbox(settings, tmp_path):
    settings.ACH_ODFI_ROUTING = ""
    settings.ACH_COMPANY_ID = ""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BILLING_NET_TERMS_DAYS = 0


@pytest.fixture
def staff(django_user_model):
    roles_sync()

    def login(role: str) -> Client:
        user = django_user_model.objects.create_user(
            username=role.lower().replace(" ", "-"), password="x", is_staff=True
        )
        user.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(user)
        return client

    return login


@pytest.fixture
def ach_file() -> AchFile:
    scheduled(issue(ach_customer()))
    ach_export(now=EXPORT)
    return AchFile.objects.get()


def test_only_the_billing_admin_role_holds_the_download_permission(db):
    roles_sync()
    holders = {
        group.name
        for group in Group.objects.filter(
            permissions__codename="download_achfile",
            permissions__content_type__app_label="rails",
        )
    }
    assert holders == {ADMIN}


@pytest.mark.parametrize("role", [VIEWER, OPERATOR])
def test_viewers_and_operators_see_the_file_masked_but_cannot_download_it(staff, ach_file, role):
    client = staff(role)
    download = reverse("admin:rails_achfile_download", args=[ach_file.pk])

    page = client.get(reverse("admin:rails_achfile_change", args=[ach_file.pk]))
    listing = client.get(reverse("admin:rails_achfile_changelist"))

    assert page.status_code == 200 and "****1012" in page.content.decode()
    for response in (page, listing):
        assert download not in response.content.decode()
        assert CLEAR not in response.content.decode()
    assert reverse("admin:rails_achfile_export") not in listing.content.decode()
    assert client.get(download).status_code == 403
    assert client.get(reverse("admin:rails_achfile_export")).status_code == 403
    assert client.post(reverse("admin:rails_achfile_export")).status_code == 403


def test_the_billing_admin_downloads_the_file_with_its_clear_numbers(staff, ach_file):
    client = staff(ADMIN)
    download = reverse("admin:rails_achfile_download", args=[ach_file.pk])

    assert download in client.get(reverse("admin:rails_achfile_changelist")).content.decode()
    assert (
        download
        in client.get(reverse("admin:rails_achfile_change", args=[ach_file.pk])).content.decode()
    )
    response = client.get(download)
    assert response.status_code == 200
    assert CLEAR in response.content.decode()
    assert client.get(reverse("admin:rails_achfile_export")).status_code == 200
