"""The publication operations of the OpenAPI description (rtc/outputs/publications.py)."""

from __future__ import annotations

from rtc.http.bodies import PublishBody, body_schema
from rtc.http.openapi_schemas import STREAM, Operation, error_response, json_body, ok_response

PUBLICATION = {
    "type": "object",
    "required": ["id", "stream", "kind", "state", "room", "feed"],
    "properties": {
        "id": {"type": "string"},
        "stream": {"type": "string"},
        "kind": {"const": "janus"},
        "state": {"enum": ["connecting", "live", "retrying", "failed", "stopped"]},
        "reason": {"type": ["string", "null"]},
        "url": {"type": "string"},
        "room": {"type": "integer"},
        "display": {"type": "string"},
        "feed": {"type": ["integer", "null"], "description": "the publisher's id in the room"},
        "attempts": {"type": "integer"},
        "retries": {"type": "integer"},
    },
}
PUBLICATION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "the 'id' POST .../publish answered",
    "schema": {"type": "string"},
}


def publication_operations() -> dict[tuple[str, str], Operation]:
    """Publishing live streams into a Janus VideoRoom."""
    missing = error_response("no such publication (it may have ended with its stream)")
    return {
        ("POST", "/api/streams/{stream}/publish"): {
            "summary": "Publish a live stream into a Janus VideoRoom (the SFU serves viewers)",
            "tags": ["publications"],
            "parameters": [STREAM],
            "requestBody": {"required": True, **json_body(body_schema(PublishBody))},
            "responses": {
                **ok_response(
                    "the publication (Location: /api/publications/{id})", PUBLICATION, "201"
                ),
                "400": error_response("malformed JSON or a field of the wrong type"),
                "403": error_response("Janus refused: wrong pin or secret"),
                "404": error_response("no live stream of that name, or no such room in Janus"),
                "409": error_response("the stream has as many publications as it may"),
                "502": error_response("no Janus answered at the URL, or it refused otherwise"),
            },
        },
        ("GET", "/api/publications"): {
            "summary": "Every publication and its state",
            "tags": ["publications"],
            "responses": ok_response(
                "the publications",
                {
                    "type": "object",
                    "properties": {"publications": {"type": "array", "items": PUBLICATION}},
                },
            ),
        },
        ("GET", "/api/publications/{id}"): {
            "summary": "One publication",
            "tags": ["publications"],
            "parameters": [PUBLICATION_ID],
            "responses": {**ok_response("the publication", PUBLICATION), "404": missing},
        },
        ("DELETE", "/api/publications/{id}"): {
            "summary": "Leave the room and free everything",
            "tags": ["publications"],
            "parameters": [PUBLICATION_ID],
            "responses": {**ok_response("the stopped publication", PUBLICATION), "404": missing},
        },
    }
