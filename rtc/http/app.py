"""The aiohttp application: routes, static pages, and the shared services."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Middleware

from rtc.http.auth import cors_middleware, origin_middleware, token_middleware
from rtc.http.avatars import register_avatars
from rtc.http.errors import ApiError, error_middleware
from rtc.http.generate import Generator
from rtc.http.jobs import register_jobs
from rtc.http.limits import json_limit_middleware
from rtc.http.metrics import Metrics, install_metrics, metrics_middleware
from rtc.http.openapi import openapi_handler
from rtc.http.pages import favicon, page, static_file
from rtc.outputs.publications import register_publications
from rtc.outputs.recording import register_recordings
from rtc.outputs.whep import register_whep
from rtc.services import Services
from rtc.webrtc.signalling import register_realtime

log = logging.getLogger(__name__)

SERVICES_KEY = web.AppKey("services", Services)


async def languages(request: web.Request) -> web.Response:
    """GET /api/languages: every TTS language, ru/kk/en first."""
    services = request.app[SERVICES_KEY]
    return web.json_response(
        {
            "default": services.config.tts.default_language,
            "max_text_chars": services.config.tts.max_text_chars,
            "languages": [
                {"code": lang.code, "name": lang.name, "backend": lang.backend, "voice": lang.voice}
                for lang in services.languages
            ],
        }
    )


async def voices(request: web.Request) -> web.Response:
    """GET /api/voices[?language=CODE]: the named voices of each language (default first);
    a language whose backend has one voice per language lists none."""
    services = request.app[SERVICES_KEY]
    wanted = request.query.get("language")
    if wanted is not None:
        try:
            codes = [services.language(wanted)]
        except ValueError as e:
            raise ApiError(400, str(e)) from None
    else:
        codes = [lang.code for lang in services.languages]
    listed = {code: services.tts.voices(code) for code in codes}
    return web.json_response({"voices": {code: v for code, v in listed.items() if v}})


async def engines(request: web.Request) -> web.Response:
    """GET /api/engines: loaded engines (device, backend) and why others are unavailable."""
    services = request.app[SERVICES_KEY]
    return web.json_response(
        {"default": services.default_engine, "engines": services.describe_engines()}
    )


async def avatars(request: web.Request) -> web.Response:
    """GET /api/avatars: prepared avatars."""
    services = request.app[SERVICES_KEY]
    return web.json_response(
        {"default": services.avatars.default, "avatars": services.avatars.describe()}
    )


async def health(_: web.Request) -> web.Response:
    """GET /healthz: the server answers."""
    return web.json_response({"status": "ok"})


def build_app(services: Services) -> web.Application:
    """The application with every route; ``services`` are already loaded."""
    http = services.config.http
    # Bodies beyond the upload limit are refused by aiohttp itself (413) before being read.
    # Order matters: metrics outermost (they count the final status), then errors (so a 401
    # or a failure is JSON), then CORS (so error answers carry CORS headers too), then the
    # origin check (foreign pages change nothing, token or not), then the token check, then
    # the JSON size limit (unauthenticated clients learn nothing more).
    metrics = Metrics()
    middlewares: list[Middleware] = [metrics_middleware(metrics), error_middleware]
    if http.cors_origins:
        middlewares.append(cors_middleware(http.cors_origins))
    middlewares.append(origin_middleware(http.cors_origins))
    if http.token or http.viewer_token:
        middlewares.append(token_middleware(http.token, http.viewer_token))
    middlewares.append(json_limit_middleware(http.max_json_bytes))
    app = web.Application(
        middlewares=middlewares, client_max_size=http.max_upload_bytes + 64 * 1024
    )
    app[SERVICES_KEY] = services
    generator = Generator(services, metrics)
    app.router.add_get("/", page("index.html"))
    app.router.add_get("/api/languages", languages)
    app.router.add_get("/api/voices", voices)
    app.router.add_get("/api/engines", engines)
    app.router.add_get("/api/avatars", avatars)
    app.router.add_post("/api/generate", generator.handle)
    register_jobs(app, generator, metrics)  # /api/jobs: cancelled on cleanup, before...
    app.on_cleanup.append(generator.close)  # ...this waits for the render threads
    app.router.add_get("/healthz", health)
    app.router.add_get("/api/openapi.json", openapi_handler(services.config))
    realtime = register_realtime(app, services)  # realtime routes; closes sessions on shutdown
    register_whep(app)  # WHEP viewers of live streams, /api/streams, /obs/{stream}
    register_recordings(app)  # /api/streams/{stream}/recording/*, /api/recordings
    register_avatars(app, services)  # POST/GET/DELETE /api/avatars/{name}: uploads
    register_publications(
        app, services.config.outputs
    )  # /api/streams/{stream}/publish, /api/publications
    install_metrics(app, metrics, services, realtime)  # GET /metrics
    app.router.add_get("/static/{filename:.+}", static_file)
    app.router.add_get("/favicon.ico", favicon)  # asked for by browsers on any page
    return app
