"""The voice list's and the live avatar switch's operations in the OpenAPI description
(rtc/http/app.py: voices; rtc/webrtc/signalling.py: avatar)."""

from __future__ import annotations

from rtc.http.bodies import AvatarBody, body_schema
from rtc.http.openapi_schemas import (
    NO_SESSION,
    SESSION_ID,
    Operation,
    error_response,
    json_body,
    ok_response,
)


def voice_operations() -> dict[tuple[str, str], Operation]:
    """GET /api/voices."""
    return {
        ("GET", "/api/voices"): {
            "summary": "Named voices per language, the default first (for 'voice' in requests)",
            "tags": ["lists"],
            "parameters": [
                {
                    "name": "language",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "only this language's voices",
                }
            ],
            "responses": {
                **ok_response(
                    "voices by language code (languages with one voice are left out)",
                    {
                        "type": "object",
                        "properties": {
                            "voices": {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                            }
                        },
                    },
                ),
                "400": error_response("unknown language"),
            },
        },
        ("POST", "/api/sessions/{session_id}/avatar"): {
            "summary": "Switch the live session's face (idle: at once; speaking: after the "
            "frames already made)",
            "tags": ["realtime"],
            "parameters": [SESSION_ID],
            "requestBody": {"required": True, **json_body(body_schema(AvatarBody))},
            "responses": {
                **ok_response(
                    "the avatar now shown",
                    {"type": "object", "properties": {"avatar": {"type": "string"}}},
                ),
                "400": error_response("unknown avatar or a malformed body"),
                "404": NO_SESSION,
            },
        },
    }
