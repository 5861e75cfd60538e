"""URLs: the page, the import button, log in and out, and the token view."""

from django.contrib.auth import views as auth
from django.urls import include, path

from contacts import views

urlpatterns = [
    path("", views.home, name="home"),
    path("import", views.start_import, name="import"),
    path("login", auth.LoginView.as_view(template_name="contacts/login.html"), name="login"),
    path("logout", auth.LogoutView.as_view(next_page="/login"), name="logout"),
    path("cyclone-sse/", include("cyclone_sse_client.django.urls")),
]
