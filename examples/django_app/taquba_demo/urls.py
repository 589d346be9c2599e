from django.urls import path

from . import views

urlpatterns = [path("reports/", views.request_report), path("jobs/<str:job_id>/", views.job_status)]
