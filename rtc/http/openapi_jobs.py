"""The render job operations of the OpenAPI description (rtc/http/jobs.py)."""

from __future__ import annotations

from config import AppConfig
from rtc.http.openapi_schemas import (
    RENDER_BODY,
    SSE_EVENT,
    TIMING,
    Operation,
    error_response,
    ok_response,
    path_parameter,
    render_refusals,
)

JOB = {
    "type": "object",
    "required": ["id", "status", "frames_done", "frames_total", "elapsed_s", "eta_s"],
    "properties": {
        "id": {"type": "string"},
        "status": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
        "frames_done": {"type": "integer", "minimum": 0},
        "frames_total": {
            "type": ["integer", "null"],
            "description": "null until the speech is synthesized or the upload decoded",
        },
        "elapsed_s": {"type": "number", "description": "since accepted; frozen once ended"},
        "eta_s": {
            "type": ["number", "null"],
            "description": "seconds left at the rate so far; null before the first chunk",
        },
        "error": {"type": "string", "description": "why it failed (only when failed)"},
        "video": {"type": "string", "description": "where the MP4 is (only when done)"},
        "duration_s": {"type": "number", "description": "the video's length (when done)"},
    },
}
JOB_ID = path_parameter("id", "the id POST /api/jobs answered")


def job_operations(config: AppConfig) -> dict[tuple[str, str], Operation]:
    """Starting, following, downloading and cancelling render jobs."""
    missing = error_response("no job of that id (unknown, or forgotten)")
    return {
        ("POST", "/api/jobs"): {
            "summary": "Render text or an audio file to MP4 in the background (as /api/generate)",
            "tags": ["video"],
            "requestBody": RENDER_BODY,
            "responses": {
                "202": {
                    "description": "queued; follow it at Location",
                    "headers": {
                        "Location": {"description": "the job", "schema": {"type": "string"}}
                    },
                    "content": {"application/json": {"schema": JOB}},
                },
                **render_refusals(config),
            },
        },
        ("GET", "/api/jobs/{id}"): {
            "summary": "A render job's state and progress",
            "tags": ["video"],
            "parameters": [JOB_ID],
            "responses": {**ok_response("the job", JOB), "404": missing},
        },
        ("GET", "/api/jobs/{id}/events"): {
            "summary": "Its progress as Server-Sent Events (progress, then done, failed or "
            "cancelled)",
            "tags": ["video"],
            "parameters": [JOB_ID],
            "responses": {
                "200": {
                    "description": "event stream; each data is the job",
                    "content": {"text/event-stream": {"schema": SSE_EVENT}},
                },
                "404": missing,
            },
        },
        ("GET", "/api/jobs/{id}/video"): {
            "summary": "The MP4 of a done job",
            "tags": ["video"],
            "parameters": [JOB_ID],
            "responses": {
                "200": {
                    "description": "H.264 + AAC MP4, 25 fps (Range requests work)",
                    "headers": TIMING,
                    "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": missing,
                "409": error_response("not done yet (the message says its status)"),
                "410": error_response("it failed or was cancelled: no video"),
            },
        },
        ("DELETE", "/api/jobs/{id}"): {
            "summary": "Cancel a queued or running job; forget a finished one and its video",
            "tags": ["video"],
            "parameters": [JOB_ID],
            "responses": {"204": {"description": "cancelled or forgotten"}, "404": missing},
        },
    }
