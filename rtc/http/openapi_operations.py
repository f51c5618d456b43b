"""Every documented operation of the HTTP API, by (method, OpenAPI path): what each accepts
and answers, written by hand (rtc/http/openapi.py assembles them with the router's routes)."""

from __future__ import annotations

from config import AppConfig
from rtc.http.openapi_avatars import avatar_operations
from rtc.http.openapi_publish import publication_operations
from rtc.http.openapi_schemas import (
    NO_SESSION,
    RENDER_BODY,
    RETRY,
    SDP_BODY,
    SESSION_ID,
    SSE_EVENT,
    STREAM,
    TIMING,
    VIEWER,
    Operation,
    error_response,
    json_body,
    ok_response,
    page_operation,
    path_parameter,
    ref,
    render_refusals,
)
from rtc.http.openapi_voices import voice_operations
from rtc.outputs.whep import ALLOW_RESOURCE, ALLOW_VIEWER


def realtime_offer(summary: str) -> Operation:
    return {
        "summary": summary,
        "tags": ["realtime"],
        "requestBody": {"required": True, **json_body(ref("Offer"))},
        "responses": {
            **ok_response(
                "the SDP answer (ICE candidates included) and the session id", ref("Answer")
            ),
            "400": error_response(
                "malformed JSON, bad SDP, no video m-line, unknown engine/avatar/language"
            ),
            "409": error_response("the stream name is already live"),
            "413": error_response("the body or the SDP is too large"),
            "503": {
                "description": "the engine cannot run here (with a fallback), or every "
                "session slot is taken (Retry-After)",
                "headers": RETRY,
                # anyOf: an EngineUnavailable body is an Error too (oneOf would fail it).
                **json_body({"anyOf": [ref("EngineUnavailable"), ref("Error")]}),
            },
        },
    }


def operations(config: AppConfig) -> dict[tuple[str, str], Operation]:
    """Every documented operation by (method, OpenAPI path)."""
    http = config.http
    return {
        ("GET", "/"): page_operation("The text/audio-to-video page"),
        ("GET", "/realtime"): page_operation("The live page, Wav2Lip GAN preselected"),
        ("GET", "/realtime2"): page_operation("The live page, Wav2Lip NOGAN preselected"),
        ("GET", "/favicon.ico"): {
            "summary": "The pages' icon (SVG)",
            "tags": ["pages"],
            "responses": {"200": {"description": "the icon"}},
        },
        ("GET", "/static/{filename}"): {
            "summary": "A file of the pages (never outside the web folder)",
            "tags": ["pages"],
            "parameters": [
                {"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "the file"},
                "404": error_response("no such file (or outside the web folder)"),
            },
        },
        ("GET", "/healthz"): {
            "summary": "Liveness: the server answers",
            "tags": ["operations"],
            "responses": ok_response(
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
            "responses": ok_response("OpenAPI 3.1", {"type": "object"}),
        },
        ("GET", "/api/languages"): {
            "summary": "Languages the TTS speaks, ru/kk/en first",
            "tags": ["lists"],
            "responses": ok_response("the languages", ref("List")),
        },
        ("GET", "/api/engines"): {
            "summary": "Lip-sync engines and why unavailable ones cannot run",
            "tags": ["lists"],
            "responses": ok_response("the engines", ref("List")),
        },
        ("GET", "/api/avatars"): {
            "summary": "Prepared avatars",
            "tags": ["lists"],
            "responses": ok_response("the avatars", ref("List")),
        },
        ("POST", "/api/generate"): {
            "summary": "Text or an audio file in, a lip-synced MP4 out",
            "tags": ["video"],
            "requestBody": RENDER_BODY,
            "responses": {
                "200": {
                    "description": "H.264 + AAC MP4, 25 fps",
                    "headers": TIMING,
                    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                },
                **render_refusals(config),
                "507": error_response("no disk space left for the render"),
            },
        },
        ("POST", "/offer"): realtime_offer("Start a realtime session: SDP offer in, answer out"),
        ("POST", "/api/generate_stream"): realtime_offer("As /offer, engine wav2lip-gan"),
        ("POST", "/api/generate_stream_nogan"): realtime_offer("As /offer, engine wav2lip-nogan"),
        ("GET", "/api/sessions/{session_id}"): {
            "summary": "A session's state and counters",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "responses": {**ok_response("state", {"type": "object"}), "404": NO_SESSION},
        },
        ("DELETE", "/api/sessions/{session_id}"): {
            "summary": "End a session",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "responses": {
                **ok_response(
                    "closed", {"type": "object", "properties": {"closed": {"type": "string"}}}
                ),
                "404": NO_SESSION,
            },
        },
        ("POST", "/api/sessions/{session_id}/say"): {
            "summary": "Queue an utterance",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "requestBody": {"required": True, **json_body(ref("Say"))},
            "responses": {
                **ok_response("queued", ref("Queued"), "202"),
                "400": error_response("bad text or language, malformed JSON"),
                "404": NO_SESSION,
                "413": error_response(f"body over {http.max_json_bytes} bytes"),
                "429": {
                    "description": f"{config.realtime.max_queued_utterances} utterances "
                    "already queued (Retry-After)",
                    "headers": RETRY,
                    **json_body(ref("Error")),
                },
            },
        },
        ("POST", "/api/sessions/{session_id}/interrupt"): {
            "summary": "Stop speaking now",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "responses": {
                **ok_response(
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
        **whep_operations(config),
        **recording_operations(),
        **publication_operations(),
        **voice_operations(),
        **avatar_operations(),
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
                    "content": {"text/event-stream": {"schema": SSE_EVENT}},
                },
                "404": NO_SESSION,
            },
        },
    }


def whep_operations(config: AppConfig) -> dict[tuple[str, str], Operation]:
    """WHEP playback of live streams (rtc/outputs/whep.py) and the OBS page."""
    viewers = config.outputs.max_viewers_per_stream
    no_stream = error_response("no live stream of that name")
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
                "400": error_response("no video m-line or unusable SDP"),
                "404": no_stream,
                "413": error_response("the offer is too large"),
                "415": error_response("not application/sdp"),
                "503": {
                    "description": f"the stream already has {viewers} viewers (Retry-After)",
                    "headers": RETRY,
                    **json_body(ref("Error")),
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
                **ok_response(
                    "ended", {"type": "object", "properties": {"closed": {"type": "string"}}}
                ),
                "404": error_response("no such stream or viewer (it may have ended)"),
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
                    **json_body(ref("Error")),
                },
            },
        },
        ("GET", "/api/streams"): {
            "summary": "Live streams and their viewers",
            "tags": ["whep"],
            "responses": ok_response(
                "the streams",
                {
                    "type": "object",
                    "required": ["streams"],
                    "properties": {"streams": {"type": "array"}},
                },
            ),
        },
        ("GET", "/obs/{stream}"): {
            **page_operation("Full-window viewer page for OBS Browser Sources"),
            "parameters": [STREAM],
        },
    }


def recording_operations() -> dict[tuple[str, str], Operation]:
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
    no_stream = error_response("no live stream of that name")
    name = path_parameter("name", "a file name from GET /api/recordings")
    return {
        ("POST", "/api/streams/{stream}/recording/start"): {
            "summary": "Start recording a live stream to fragmented MP4",
            "tags": ["recordings"],
            "parameters": [STREAM],
            "responses": {
                **ok_response("recording", recording, "201"),
                "404": no_stream,
                "409": error_response("already recording"),
                "507": error_response("the recordings folder cannot be created"),
            },
        },
        ("POST", "/api/streams/{stream}/recording/stop"): {
            "summary": "Stop recording; answers once the file is complete",
            "tags": ["recordings"],
            "parameters": [STREAM],
            "responses": {
                **ok_response("the finished recording", recording),
                "404": no_stream,
                "409": error_response("not recording"),
            },
        },
        ("GET", "/api/streams/{stream}/recording"): {
            "summary": "The stream's current or last recording",
            "tags": ["recordings"],
            "parameters": [STREAM],
            "responses": {**ok_response("recording", recording), "404": no_stream},
        },
        ("GET", "/api/recordings"): {
            "summary": "Recordings on disk, newest first",
            "tags": ["recordings"],
            "responses": ok_response(
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
                "400": error_response("not a recording name"),
                "404": error_response("no such recording"),
            },
        },
    }
