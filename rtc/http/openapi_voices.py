"""The voice list's operation in the OpenAPI description (rtc/http/app.py: voices)."""

from __future__ import annotations

from rtc.http.openapi_schemas import Operation, error_response, ok_response


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
        }
    }
