"""The product's URLs plus ``GET /bench/trivial``: the least a Django request can cost
through the same server, middleware and settings (it reads neither the database nor the
cache), the floor the value check is compared with."""

from django.http import JsonResponse
from django.urls import path

from config.urls import urlpatterns as product_urlpatterns


def trivial(request):
    return JsonResponse({"ok": True})


urlpatterns = [path("bench/trivial", trivial, name="bench-trivial"), *product_urlpatterns]
