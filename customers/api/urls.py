from django.urls import path

from customers.api import views

urlpatterns = [
    path("customers", views.CustomerListCreate.as_view(), name="customer-list"),
    path("customers/<str:key>", views.CustomerDetail.as_view(), name="customer-detail"),
    path(
        "customers/<str:key>/consumers",
        views.CustomerConsumerMappingList.as_view(),
        name="customer-consumers",
    ),
    path(
        "consumer-mappings", views.ConsumerMappingListCreate.as_view(), name="consumer-mapping-list"
    ),
    path(
        "consumer-mappings/<int:pk>",
        views.ConsumerMappingDetail.as_view(),
        name="consumer-mapping-detail",
    ),
    path(
        "consumers/<str:consumer_key>/move", views.ConsumerKeyMove.as_view(), name="consumer-move"
    ),
    path(
        "consumers/<str:consumer_key>/customer",
        views.ConsumerResolve.as_view(),
        name="consumer-resolve",
    ),
]
