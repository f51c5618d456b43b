"""One typed model per JSON request body, shared by the HTTP handlers, the data channel and
the OpenAPI description (rtc/http/openapi.py takes their JSON schemas from here).

Pydantic v2 in strict mode: a field of the wrong JSON type is an error, never coerced
("yes" is not true, 5 is not an engine name). What depends on the running configuration
(the text limit, known languages, engines and avatars) is checked by the handlers after the
model, with the same messages everywhere.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rtc.http.errors import ApiError
from rtc.outputs.streams import STREAM_NAME

MAX_SDP_BYTES = 64 * 1024
"""Largest SDP offer taken (a browser's is 3-8 KB)."""

Model = TypeVar("Model", bound="Body")


class Body(BaseModel):
    """Base of the request bodies: strict types, unknown fields ignored (clients add their
    own, e.g. a data-channel message's ``type`` and ``id``)."""

    model_config = ConfigDict(strict=True, extra="ignore")


Name = Field(default=None, description="a name the matching GET list answers")
Language = Field(default=None, description="a code from GET /api/languages")


class VoiceFields(Body):
    """What a request may ask of the voice (GET /api/voices lists the voices)."""

    voice: str | None = Field(
        default=None,
        max_length=128,
        description="a voice from GET /api/voices; default: the language's",
    )
    speed: float | None = Field(
        default=None, ge=0.5, le=2.0, description="1.0 normal, 0.5 half as fast, 2.0 twice"
    )
    pitch: float | None = Field(
        default=None, ge=0.5, le=2.0, description="1.0 normal (espeak only)"
    )


class SayBody(VoiceFields):
    """``POST /api/sessions/{id}/say`` and the data channel's ``{"type": "say"}``."""

    text: str = Field(description="what to say (not only spaces, no NUL characters)")
    language: str | None = Field(
        default=None, description="a code from GET /api/languages; default: the session's"
    )


class AvatarBody(Body):
    """``POST /api/sessions/{id}/avatar`` and the data channel's ``{"type": "avatar"}``."""

    avatar: str = Field(description="a name from GET /api/avatars")


class GenerateBody(VoiceFields):
    """``POST /api/generate`` as JSON."""

    text: str = Field(description="what to say (not only spaces, no NUL characters)")
    language: str | None = Language
    engine: str | None = Name
    avatar: str | None = Name


class OfferBody(Body):
    """``POST /offer`` and the pinned stream endpoints."""

    sdp: str = Field(
        description="the browser's SDP offer, with a video m-line",
        json_schema_extra={"minLength": 1, "pattern": r"\S", "maxLength": MAX_SDP_BYTES},
    )
    type: Literal["offer"]
    engine: str | None = Name
    avatar: str | None = Name
    language: str | None = Language
    echo_mic: bool = Field(default=False, description="send the caller's voice back")
    stream: str | None = Field(
        default=None,
        description="name viewers use (WHEP, /obs/); default: a random name of its own "
        "(not the session id)",
        json_schema_extra={"pattern": f"^{STREAM_NAME.pattern}$"},
    )

    @field_validator("sdp")
    @classmethod
    def _sdp_text(cls, sdp: str) -> str:
        if not sdp.strip():
            raise ValueError("'sdp' must be the offer's SDP text")
        return sdp


class RelayTarget(Body):
    """One more Janus the publication is cascaded to (``add_remote_publisher`` there,
    ``publish_remotely`` on the first)."""

    url: str = Field(
        description="that Janus's HTTP API", json_schema_extra={"pattern": "^https?://"}
    )
    room: int = Field(ge=1, le=2**53, description="its VideoRoom (created if missing)")
    secret: str | None = Field(default=None, max_length=256, description="that room's secret")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _janus_url(url)


def _janus_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise ValueError("'url' must be Janus's http(s) API URL, e.g. http://HOST:8088/janus")
    return url


class PublishBody(Body):
    """``POST /api/streams/{stream}/publish``: where to publish the stream (Janus VideoRoom)."""

    kind: Literal["janus"] = Field(description="the media server: only Janus so far")
    url: str = Field(
        description="Janus's HTTP API, e.g. http://127.0.0.1:8088/janus",
        json_schema_extra={"pattern": "^https?://", "maxLength": 2048},
    )
    room: int = Field(ge=1, le=2**53, description="the VideoRoom's number")
    display: str = Field(default="avatar", max_length=128, description="the publisher's name")
    secret: str | None = Field(
        default=None, max_length=256, description="the room's secret (for create_room)"
    )
    pin: str | None = Field(default=None, max_length=256, description="the room's PIN")
    create_room: bool = Field(default=False, description="create the room if it is missing")
    admin_key: str | None = Field(
        default=None,
        max_length=256,
        description="Janus's VideoRoom admin_key, where its config requires one to create rooms",
    )
    feed: int | None = Field(
        default=None,
        ge=1,
        le=2**53,
        description="the publisher id to join with (stable across reconnections, so a WHEP "
        "endpoint in front of Janus can name it); default: one Janus picks",
    )
    relays: list[RelayTarget] = Field(
        default_factory=list,
        max_length=8,
        description="further Janus instances the first one forwards this publisher to "
        "(VideoRoom remote publishers), so viewers spread over several SFU hosts",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return _janus_url(url)


def parse_body(model: type[Model], data: object) -> Model:
    """``data`` (a parsed JSON object) as ``model``; ApiError(400) saying what to change."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(400, describe_errors(e)) from None


def describe_errors(error: ValidationError) -> str:
    """Pydantic's errors as the messages this API gives (the first one is enough)."""
    first: dict[str, Any] = dict(error.errors(include_url=False)[0])
    field = ".".join(str(part) for part in first.get("loc", ())) or "body"
    kind = first.get("type", "")
    if kind == "missing":
        return f"'{field}' is required"
    if kind == "string_type":
        return f"'{field}' must be a string"
    if kind == "bool_type":
        return f"'{field}' must be true or false"
    if kind == "literal_error":
        expected = first.get("ctx", {}).get("expected", "")
        return f"'{field}' must be {expected}"
    if kind == "value_error":
        return str(first.get("ctx", {}).get("error", first.get("msg", "")))
    return f"'{field}': {first.get('msg', 'invalid')}"


def body_schema(model: type[Body]) -> dict[str, Any]:
    """The model's JSON schema for the OpenAPI components (no titles: they add nothing)."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema
