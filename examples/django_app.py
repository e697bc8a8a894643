"""A single-file Django app whose ``request.session`` is a donjon session.

Run it with any WSGI server, e.g.::

    DONJON_COOKIE_SECURE=0 python -m waitress --listen=127.0.0.1:8000 examples.django_app:app

Routes: ``GET /count`` counts visits in the session, ``POST /login`` (form
field ``user``) logs in and regenerates the session id, ``POST /logout``
ends the session, ``GET /whoami`` shows the user and the verdict of the
cookie that came with the request.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        # Django's own signing key (CSRF tokens, password resets); donjon
        # signs its cookies with its own key ring.
        SECRET_KEY=secrets.token_urlsafe(50),
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            # In place of django.contrib.sessions.middleware.SessionMiddleware:
            "donjon.adapters.django.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        # A function returning the engine; called once per process.
        DONJON_ENGINE="examples._config.sync_engine",
    )

# Imported once the settings exist (some Django modules read them on import).
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from donjon.adapters.django import get_session


@require_GET
def count(request: HttpRequest) -> JsonResponse:
    """Increment ``n`` in the session."""
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"]})


# The POST routes are a JSON API for scripts and tests, so they are exempt
# from Django's CSRF check. A browser-facing form must keep the check: the
# session cookie's SameSite=Lax is a second wall, not a replacement.
@csrf_exempt
@require_POST
def login(request: HttpRequest) -> JsonResponse:
    """Log in as the form field ``user``; the session id is regenerated."""
    user = request.POST.get("user", "").strip()
    if not user:
        return JsonResponse({"error": "form field 'user' is required"}, status=400)
    # A real app checks a password first (django.contrib.auth.login works too).
    get_session(request).login(user)
    return JsonResponse({"user": user})


@csrf_exempt
@require_POST
def logout(request: HttpRequest) -> JsonResponse:
    """End the session: record deleted, cookie cleared."""
    get_session(request).destroy()
    return JsonResponse({"user": None})


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    """Show the user and the verdict of the cookie that came with the request."""
    session = get_session(request)
    return JsonResponse({"user": session.user_id, "verdict": session.verdict.value})


urlpatterns: list[Any] = [
    path("count", count),
    path("login", login),
    path("logout", logout),
    path("whoami", whoami),
]

app = get_wsgi_application()
