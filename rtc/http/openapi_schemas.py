"""Building blocks of the OpenAPI description: response helpers, shared parameters, and the
component schemas (request bodies from their models in rtc/http/bodies.py)."""

from __future__ import annotations

from typing import Any

from config import AppConfig
from rtc.http.bodies import Body, GenerateBody, OfferBody, SayBody, body_schema

Schema = dict[str, Any]
Operation = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: Schema) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def error_response(why: str) -> dict[str, Any]:
    return {"description": why, **json_body(ref("Error"))}


def ok_response(why: str, schema: Schema, status: str = "200") -> dict[str, Any]:
    return {status: {"description": why, **json_body(schema)}}


def page_operation(summary: str) -> Operation:
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


def path_parameter(name: str, description: str) -> Schema:
    """A required string parameter of the path."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "description": "the id /offer answered",
    "schema": {"type": "string"},
}
SSE_EVENT = {
    "type": "object",
    "description": "one Server-Sent Event: its event name and its data (a JSON object)",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
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
NO_SESSION = error_response("no such session (it ended or timed out)")
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


RENDER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": ref("GenerateText")},
        "multipart/form-data": {"schema": ref("GenerateUpload")},
    },
}
"""What /api/generate and POST /api/jobs take."""


def render_refusals(config: AppConfig) -> dict[str, Any]:
    """What /api/generate and POST /api/jobs refuse at once (rtc/http/generate.py admit)."""
    http = config.http
    return {
        "400": error_response("bad text, language, engine, avatar, JSON or upload"),
        "413": error_response(
            f"body over {http.max_json_bytes} bytes (JSON) or upload over "
            f"{http.max_upload_bytes} bytes"
        ),
        "415": error_response("neither JSON nor multipart"),
        "503": {
            "description": "engine unavailable here, TTS failure, or more than "
            f"{http.max_waiting_renders} renders waiting (Retry-After)",
            "headers": RETRY,
            **json_body(ref("Error")),
        },
    }


def text_body(model: type[Body], config: AppConfig) -> Schema:
    """A body model's schema with the running text limit (the model cannot know it)."""
    schema = body_schema(model)
    schema["properties"]["text"].update(minLength=1, maxLength=config.tts.max_text_chars)
    return schema


def schemas(config: AppConfig) -> dict[str, Schema]:
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
        "GenerateText": text_body(GenerateBody, config),
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
        "Say": text_body(SayBody, config),
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
