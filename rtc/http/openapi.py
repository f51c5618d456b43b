"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /api/openapi.json``.

The operations are written here by hand (what each accepts and answers), but the document is
assembled from the application's router, so it lists exactly the routes that exist. A route
with no description here still appears, marked ``x-undocumented``; :func:`undocumented` lists
those, and a test keeps that list empty, so a new endpoint cannot ship without its entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from config import AppConfig
from rtc.http.auth import STATE_CHANGING, guarded, viewer_path
from rtc.http.bodies import (
    Body,
    GenerateBody,
    OfferBody,
    SayBody,
    body_schema,
)
from rtc.outputs.whep import ALLOW_RESOURCE, ALLOW_VIEWER

Schema = dict[str, Any]
Operation = dict[str, Any]

SKIPPED_METHODS = ("HEAD",)
"""aiohttp adds HEAD to every GET. (CORS preflights are answered by middleware; OPTIONS
routes registered on purpose, like WHEP's, are described.)"""


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(why: str) -> dict[str, Any]:
    return {"description": why, **_json(_ref("Error"))}


def _ok(why: str, schema: Schema, status: str = "200") -> dict[str, Any]:
    return {status: {"description": why, **_json(schema)}}


def _page(summary: str) -> Operation:
    return {
        "summary": summary,
        "tags": ["pages"],
        "responses": {
            "200": {
                "description": "the page",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    }


SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "description": "the id /offer answered",
    "schema": {"type": "string"},
}
STREAM = {
    "name": "stream",
    "in": "path",
    "required": True,
    "description": "the 'stream' /offer answered",
    "schema": {"type": "string"},
}
VIEWER = {
    "name": "viewer",
    "in": "path",
    "required": True,
    "description": "the last part of the Location a WHEP POST answered",
    "schema": {"type": "string"},
}
SDP_TEXT = {
    "type": "string",
    "minLength": 1,
    "pattern": "\\S",
    "description": "SDP text (not empty, not only spaces)",
}
SDP_BODY = {"required": True, "content": {"application/sdp": {"schema": SDP_TEXT}}}
NO_SESSION = _error("no such session (it ended or timed out)")
RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
TIMING = {
    name: {"description": "seconds", "schema": {"type": "number"}}
    for name in (
        "X-Timing-TTS",
        "X-Timing-Lipsync",
        "X-Timing-Encode",
        "X-Timing-Total",
        "X-Video-Duration",
    )
}


def _text_body(model: type[Body], config: AppConfig) -> Schema:
    """A body model's schema with the running text limit (the model cannot know it)."""
    schema = body_schema(model)
    schema["properties"]["text"].update(minLength=1, maxLength=config.tts.max_text_chars)
    return schema


def _schemas(config: AppConfig) -> dict[str, Schema]:
    """Component schemas: the request bodies from their models (rtc/http/bodies.py), the
    rest written here; limits come from the running configuration."""
    name = {"type": "string", "description": "a name the matching GET list answers"}
    language = {"type": "string", "description": "a code from GET /api/languages"}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "what went wrong and what to change"}
            },
        },
        "GenerateText": _text_body(GenerateBody, config),
        "GenerateUpload": {
            "type": "object",
            "required": ["audio"],
            "properties": {
                "audio": {
                    "type": "string",
                    "format": "binary",
                    "description": f"wav, mp3, ogg, m4a or webm; at most "
                    f"{config.http.max_upload_bytes} bytes and "
                    f"{config.http.max_upload_seconds:g} s",
                },
                "language": language,
                "engine": name,
                "avatar": name,
            },
        },
        "Offer": body_schema(OfferBody),
        "Answer": {
            "type": "object",
            "required": ["sdp", "type", "session_id"],
            "properties": {
                "sdp": {"type": "string"},
                "type": {"const": "answer"},
                "session_id": {"type": "string"},
                "engine": {"type": "string"},
                "avatar": {"type": "string"},
                "stream": {"type": "string"},
            },
        },
        "EngineUnavailable": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "engine": {"type": "string"},
                "reason": {"type": "string"},
                "fallback": {
                    "type": ["string", "null"],
                    "description": "an engine that runs here, to offer instead",
                },
            },
        },
        "Say": _text_body(SayBody, config),
        "Queued": {
            "type": "object",
            "required": ["utterance"],
            "properties": {"utterance": {"type": "string"}, "sentences": {"type": "integer"}},
        },
        "List": {
            "type": "object",
            "required": ["default"],
            "description": "see docs/api.md for the items' fields",
            "properties": {"default": {"type": "string"}},
        },
    }


def _realtime_offer(summary: str) -> Operation:
    return {
        "summary": summary,
        "tags": ["realtime"],
        "requestBody": {"required": True, **_json(_ref("Offer"))},
        "responses": {
            **_ok("the SDP answer (ICE candidates included) and the session id", _ref("Answer")),
            "400": _error(
                "malformed JSON, bad SDP, no video m-line, unknown engine/avatar/language"
            ),
            "409": _error("the stream name is already live"),
            "413": _error("the body or the SDP is too large"),
            "503": {
                "description": "the engine cannot run here (with a fallback), or every "
                "session slot is taken (Retry-After)",
                "headers": RETRY,
                # anyOf: an EngineUnavailable body is an Error too (oneOf would fail it).
                **_json({"anyOf": [_ref("EngineUnavailable"), _ref("Error")]}),
            },
        },
    }


def _operations(config: AppConfig) -> dict[tuple[str, str], Operation]:
    """Every documented operation by (method, OpenAPI path)."""
    http = config.http
    return {
        ("GET", "/"): _page("The text/audio-to-video page"),
        ("GET", "/realtime"): _page("The realtime page (Wav2Lip GAN)"),
        ("GET", "/realtime2"): _page("The realtime page (Wav2Lip NOGAN)"),
        ("GET", "/static/{filename}"): {
            "summary": "A file of the pages (never outside the web folder)",
            "tags": ["pages"],
            "parameters": [
                {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "the file"},
                "404": _error("no such file (or outside the web folder)"),
            },
        },
        ("GET", "/healthz"): {
            "summary": "Liveness: the server answers",
            "tags": ["operations"],
            "responses": _ok(
                "alive",
                {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "ok"}},
                },
            ),
        },
        ("GET", "/metrics"): {
            "summary": "Prometheus metrics (needs the token when one is set)",
            "tags": ["operations"],
            "responses": {
                "200": {
                    "description": "the Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        },
        ("GET", "/api/openapi.json"): {
            "summary": "This document",
            "tags": ["operations"],
            "responses": _ok("OpenAPI 3.1", {"type": "object"}),
        },
        ("GET", "/api/languages"): {
            "summary": "Languages the TTS speaks, ru/kk/en first",
            "tags": ["lists"],
            "responses": _ok("the languages", _ref("List")),
        },
        ("GET", "/api/engines"): {
            "summary": "Lip-sync engines and why unavailable ones cannot run",
            "tags": ["lists"],
            "responses": _ok("the engines", _ref("List")),
        },
        ("GET", "/api/avatars"): {
            "summary": "Prepared avatars",
            "tags": ["lists"],
            "responses": _ok("the avatars", _ref("List")),
        },
        ("POST", "/api/generate"): {
            "summary": "Text or an audio file in, a lip-synced MP4 out",
            "tags": ["video"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("GenerateText")},
                    "multipart/form-data": {"schema": _ref("GenerateUpload")},
                },
            },
            "responses": {
                "200": {
                    "description": "H.264 + AAC MP4, 25 fps",
                    "headers": TIMING,
                    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                },
                "400": _error("bad text, language, engine, avatar, JSON or upload"),
                "413": _error(
                    f"body over {http.max_json_bytes} bytes (JSON) or upload over "
                    f"{http.max_upload_bytes} bytes"
                ),
                "415": _error("neither JSON nor multipart"),
                "503": {
                    "description": "engine unavailable here, TTS failure, or more than "
                    f"{http.max_waiting_renders} renders waiting "
                    "(Retry-After)",
                    "headers": RETRY,
                    **_json(_ref("Error")),
                },
                "507": _error("no disk space left for the render"),
            },
        },
        ("POST", "/offer"): _realtime_offer("Start a realtime session: SDP offer in, answer out"),
        ("POST", "/api/generate_stream"): _realtime_offer("As /offer, engine wav2lip-gan"),
        ("POST", "/api/generate_stream_nogan"): _realtime_offer("As /offer, engine wav2lip-nogan"),
        ("GET", "/api/sessions/{session_id}"): {
            "summary": "A session's state and counters",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "responses": {**_ok("state", {"type": "object"}), "404": NO_SESSION},
        },
        ("DELETE", "/api/sessions/{session_id}"): {
            "summary": "End a session",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "responses": {
                **_ok("closed", {"type": "object", "properties": {"closed": {"type": "string"}}}),
                "404": NO_SESSION,
            },
        },
        ("POST", "/api/sessions/{session_id}/say"): {
            "summary": "Queue an utterance",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "requestBody": {"required": True, **_json(_ref("Say"))},
            "responses": {
                **_ok("queued", _ref("Queued"), "202"),
                "400": _error("bad text or language, malformed JSON"),
                "404": NO_SESSION,
                "413": _error(f"body over {http.max_json_bytes} bytes"),
                "429": {
                    "description": f"{http.max_queued_utterances} utterances "
                    "already queued (Retry-After)",
                    "headers": RETRY,
                    **_json(_ref("Error")),
                },
            },
        },
        ("POST", "/api/sessions/{session_id}/interrupt"): {
            "summary": "Stop speaking now",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "responses": {
                **_ok(
                    "the dropped utterances",
                    {
                        "type": "object",
                        "properties": {
                            "interrupted": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                ),
                "404": NO_SESSION,
            },
        },
        **_whep_operations(config),
        **_recording_operations(),
        ("GET", "/api/sessions/{session_id}/events"): {
            "summary": "The session's events as Server-Sent Events",
            "tags": ["realtime"],
            "parameters": [
                SESSION_ID,
                {
                    "name": "replay",
                    "in": "query",
                    "required": False,
                    "description": "0: skip the recent events",
                    "schema": {"type": "string", "enum": ["0", "1"]},
                },
            ],
            "responses": {
                "200": {
                    "description": "until the session ends",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "404": NO_SESSION,
            },
        },
    }


def _whep_operations(config: AppConfig) -> dict[tuple[str, str], Operation]:
    """WHEP playback of live streams (rtc/outputs/whep.py) and the OBS page."""
    viewers = config.http.max_viewers_per_stream
    no_stream = _error("no live stream of that name")
    return {
        ("OPTIONS", "/whep/{stream}"): {
            "summary": "What the WHEP resource accepts (also a CORS preflight)",
            "tags": ["whep"],
            "parameters": [STREAM],
            "responses": {
                "204": {
                    "description": "Accept-Post: application/sdp",
                    "headers": {"Allow": {"schema": {"const": ALLOW_RESOURCE}}},
                }
            },
        },
        ("POST", "/whep/{stream}"): {
            "summary": "Watch a live stream: a recvonly SDP offer in, the answer out",
            "tags": ["whep"],
            "parameters": [STREAM],
            "requestBody": SDP_BODY,
            "responses": {
                "201": {
                    "description": "the SDP answer; Location: the viewer's URL",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": {"application/sdp": {"schema": {"type": "string"}}},
                },
                "400": _error("no video m-line or unusable SDP"),
                "404": no_stream,
                "413": _error("the offer is too large"),
                "415": _error("not application/sdp"),
                "503": {
                    "description": f"the stream already has {viewers} viewers (Retry-After)",
                    "headers": RETRY,
                    **_json(_ref("Error")),
                },
            },
        },
        ("OPTIONS", "/whep/{stream}/{viewer}"): {
            "summary": "What a viewer resource accepts",
            "tags": ["whep"],
            "parameters": [STREAM, VIEWER],
            "responses": {
                "204": {
                    "description": "Allow: DELETE, OPTIONS (PATCH answers 405)",
                    "headers": {"Allow": {"schema": {"const": ALLOW_VIEWER}}},
                }
            },
        },
        ("DELETE", "/whep/{stream}/{viewer}"): {
            "summary": "Stop watching",
            "tags": ["whep"],
            "parameters": [STREAM, VIEWER],
            "responses": {
                **_ok("ended", {"type": "object", "properties": {"closed": {"type": "string"}}}),
                "404": _error("no such stream or viewer (it may have ended)"),
            },
        },
        ("PATCH", "/whep/{stream}/{viewer}"): {
            "summary": "Trickle ICE and ICE restarts: not supported (the answer carries every "
            "candidate), so 405 as RFC 9725 asks; Allow lists what is",
            "tags": ["whep"],
            "parameters": [STREAM, VIEWER],
            "requestBody": {
                "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}}
            },
            "responses": {
                "404": no_stream,
                "405": {
                    "description": "not supported",
                    "headers": {"Allow": {"schema": {"const": ALLOW_VIEWER}}},
                    **_json(_ref("Error")),
                },
            },
        },
        ("GET", "/api/streams"): {
            "summary": "Live streams and their viewers",
            "tags": ["whep"],
            "responses": _ok(
                "the streams",
                {
                    "type": "object",
                    "required": ["streams"],
                    "properties": {"streams": {"type": "array"}},
                },
            ),
        },
        ("GET", "/obs/{stream}"): {
            **_page("Full-window viewer page for OBS Browser Sources"),
            "parameters": [STREAM],
        },
    }


def _recording_operations() -> dict[tuple[str, str], Operation]:
    """Recordings of live streams (rtc/outputs/recording.py)."""
    recording = {
        "type": "object",
        "properties": {
            "recording": {"type": "string"},
            "stream": {"type": "string"},
            "frames": {"type": "integer"},
            "seconds": {"type": "number"},
            "dropped": {"type": "integer"},
            "active": {"type": "boolean"},
            "stop_reason": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
        },
    }
    no_stream = _error("no live stream of that name")
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "a file name from GET /api/recordings",
    }
    return {
        ("POST", "/api/streams/{stream}/recording/start"): {
            "summary": "Start recording a live stream to fragmented MP4",
            "tags": ["recordings"],
            "parameters": [STREAM],
            "responses": {
                **_ok("recording", recording, "201"),
                "404": no_stream,
                "409": _error("already recording"),
                "507": _error("the recordings folder cannot be created"),
            },
        },
        ("POST", "/api/streams/{stream}/recording/stop"): {
            "summary": "Stop recording; answers once the file is complete",
            "tags": ["recordings"],
            "parameters": [STREAM],
            "responses": {
                **_ok("the finished recording", recording),
                "404": no_stream,
                "409": _error("not recording"),
            },
        },
        ("GET", "/api/streams/{stream}/recording"): {
            "summary": "The stream's current or last recording",
            "tags": ["recordings"],
            "parameters": [STREAM],
            "responses": {**_ok("recording", recording), "404": no_stream},
        },
        ("GET", "/api/recordings"): {
            "summary": "Recordings on disk, newest first",
            "tags": ["recordings"],
            "responses": _ok(
                "the files", {"type": "object", "properties": {"recordings": {"type": "array"}}}
            ),
        },
        ("GET", "/api/recordings/{name}"): {
            "summary": "Download a recording",
            "tags": ["recordings"],
            "parameters": [name],
            "responses": {
                "200": {
                    "description": "the MP4 file",
                    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                },
                "400": _error("not a recording name"),
                "404": _error("no such recording"),
            },
        },
    }


def route_paths(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, OpenAPI path) the router serves, HEAD and OPTIONS left out."""
    found: list[tuple[str, str]] = []
    for route in app.router.routes():
        if route.method in SKIPPED_METHODS or route.resource is None:
            continue
        path = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):  # in case add_static comes back
            path = path.rstrip("/") + "/{filename}"
        if (route.method, path) not in found:
            found.append((route.method, path))
    return found


def undocumented(app: web.Application, config: AppConfig) -> list[tuple[str, str]]:
    """Routes of ``app`` this module has no description for (a test keeps this empty)."""
    known = _operations(config)
    return [key for key in route_paths(app) if key not in known]


def build_spec(app: web.Application, config: AppConfig) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes."""
    known = _operations(config)
    paths: dict[str, dict[str, Operation]] = {}
    for method, path in route_paths(app):
        operation = dict(
            known.get((method, path))
            or {
                "summary": "undocumented route",
                "x-undocumented": True,
                "responses": {"default": {"description": "see the source"}},
            }
        )
        if "requestBody" in operation:
            operation["responses"] = {
                **operation["responses"],
                "415": _error("a Content-Type the operation does not take"),
            }
        if method in STATE_CHANGING:
            operation["responses"] = {
                **operation["responses"],
                "403": _error("sent by a page of a foreign origin (see --cors-origin)"),
            }
        if guarded(method, path) and (
            config.http.token or (config.http.viewer_token and viewer_path(path))
        ):
            operation["security"] = [{"bearer": []}]
            operation["responses"] = {
                **operation["responses"],
                "401": _error("missing or wrong API token"),
            }
        paths.setdefault(path, {})[method.lower()] = operation
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Talking Avatar",
            "version": "0.1.0",
            "description": "Realtime lip-synced avatar server. Every error is JSON "
            '{"error": ...}; see docs/api.md.',
        },
        "paths": paths,
        "components": {"schemas": _schemas(config)},
    }
    if config.http.token:
        spec["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's --token; ?token= works too",
            }
        }
    return spec


def openapi_handler(config: AppConfig) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /api/openapi.json (built once, on the first request: the routes are fixed then)."""
    cache: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        if "spec" not in cache:
            cache["spec"] = build_spec(request.app, config)
        return web.json_response(cache["spec"])

    return handler
