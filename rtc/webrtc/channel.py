"""The session's data channel: each message in, its one reply out (rtc/webrtc/replies.py
types them). Checked by the same body models as the HTTP endpoints (rtc/http/bodies.py), so
a ``say`` means the same over either."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import ValidationError

from rtc.http.bodies import AvatarBody, SayBody, describe_errors
from rtc.live.clock import MediaClock
from rtc.live.speech import QueueFull, Utterance
from rtc.webrtc.replies import (
    AvatarSwitched,
    ErrorReply,
    Interrupted,
    Pong,
    Queued,
    Reply,
    Stats,
    echoable,
    parse_message,
)


class ChannelSession(Protocol):
    """What the data channel asks of its session."""

    clock: MediaClock

    def say_body(self, body: SayBody) -> Utterance: ...
    def interrupt(self) -> list[str]: ...
    def describe(self) -> dict[str, Any]: ...
    def switch_avatar(self, name: str) -> str: ...


def answer(session: ChannelSession, message: object) -> dict[str, Any]:
    """The wire reply to ``message`` (its ``id`` echoed); bad messages get an error reply."""
    data = parse_message(message)
    try:
        reply = reply_to(session, data)
    except (ValueError, QueueFull) as e:
        reply = ErrorReply(str(e))
    wire = reply.to_wire()
    if "id" in data and echoable(data["id"]):  # lets a client match replies to requests
        wire["id"] = data["id"]
    return wire


def reply_to(session: ChannelSession, data: dict[str, Any]) -> Reply:
    """Carry out one message; its reply. ValueError (or QueueFull) for a bad one."""
    kind = data.get("type")
    if kind == "say":
        return Queued(session.say_body(_body(SayBody, data)).id)
    if kind == "interrupt":
        return Interrupted(session.interrupt())
    if kind == "ping":
        t = data.get("t")
        return Pong(t if echoable(t) else None, server_time=session.clock.now())
    if kind == "stats":
        return Stats(session.describe())
    if kind == "avatar":
        return AvatarSwitched(session.switch_avatar(_body(AvatarBody, data).avatar))
    raise ValueError(
        f"unknown message type {kind!r}; messages are JSON objects "
        "with type say, interrupt, ping, stats or avatar"
    )


def _body(model: type[SayBody] | type[AvatarBody], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValueError(describe_errors(e)) from None
