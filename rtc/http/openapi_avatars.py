"""The avatar upload operations of the OpenAPI description (rtc/http/avatars.py)."""

from __future__ import annotations

from rtc.http.openapi_schemas import SSE_EVENT, Operation, error_response, ok_response

STATUS = {
    "type": "object",
    "required": ["name", "status", "progress"],
    "properties": {
        "name": {"type": "string"},
        "status": {"enum": ["preparing", "ready", "failed"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "error": {"type": "string", "description": "why it failed"},
    },
}
NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "an avatar name",
}


def avatar_operations() -> dict[tuple[str, str], Operation]:
    """Uploading, following, previewing and deleting avatars."""
    missing = error_response("no avatar of that name")
    return {
        ("POST", "/api/avatars"): {
            "summary": "Upload an avatar (an image or a video loop); prepared in the background",
            "tags": ["avatars"],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file", "name"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
                                "teeth": {"type": "string", "enum": ["true", "false"]},
                            },
                        }
                    }
                },
            },
            "responses": {
                **ok_response("preparation under way", STATUS, "202"),
                "400": error_response("a bad name, file type or body"),
                "409": error_response("the name is taken"),
                "413": error_response("the file is over --max-avatar-bytes"),
                "415": error_response("not multipart/form-data"),
            },
        },
        ("GET", "/api/avatars/{name}"): {
            "summary": "An avatar's preparation state",
            "tags": ["avatars"],
            "parameters": [NAME],
            "responses": {**ok_response("its state", STATUS), "404": missing},
        },
        ("GET", "/api/avatars/{name}/events"): {
            "summary": "Its preparation progress as Server-Sent Events, until ready or failed",
            "tags": ["avatars"],
            "parameters": [NAME],
            "responses": {
                "200": {
                    "description": "event stream",
                    "content": {"text/event-stream": {"schema": SSE_EVENT}},
                },
                "404": missing,
            },
        },
        ("GET", "/api/avatars/{name}/preview"): {
            "summary": "Its first frame with the detected face box (JPEG); box=0: the plain still",
            "tags": ["avatars"],
            "parameters": [
                NAME,
                {
                    "name": "box",
                    "in": "query",
                    "required": False,
                    "description": "0: without the face box (the live pages' poster)",
                    "schema": {"type": "string", "enum": ["0", "1"]},
                },
            ],
            "responses": {
                "200": {
                    "description": "the picture",
                    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": missing,
            },
        },
        ("DELETE", "/api/avatars/{name}"): {
            "summary": "Delete an uploaded avatar",
            "tags": ["avatars"],
            "parameters": [NAME],
            "responses": {
                "204": {"description": "deleted"},
                "403": error_response("a shipped avatar"),
                "404": missing,
                "409": error_response("the server's default avatar"),
            },
        },
    }
