"""The data channel's vocabulary: what a client may send and what the session answers, one
dataclass per reply, serialised by the same :meth:`LiveEvent.to_wire` as the events, and
documented from the same classes (:func:`markdown_table` writes docs/api.md's data-channel
table; tests/test_events_doc.py compares the two).

A reply echoes the message's ``"id"`` (added by the session), so a client can match it to
its request.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from rtc.http.errors import MalformedJson, parse_json
from rtc.live.event_kinds import LiveEvent


@dataclass(frozen=True)
class Reply(LiveEvent):
    """Base of the replies; ``request`` is the message that gets it (the docs' first column)."""

    request: ClassVar[str] = ""


@dataclass(frozen=True)
class Queued(Reply):
    kind: ClassVar[str] = "queued"
    request: ClassVar[str] = '`{"type": "say", "text", "language"?, "voice"?, "speed"?, "pitch"?}`'
    when: ClassVar[str] = (
        "checked by the same model as HTTP `say` (rtc/http/bodies.py): without `language` "
        "the session's, a non-string field is an `error` reply"
    )
    utterance: str


@dataclass(frozen=True)
class Interrupted(Reply):
    kind: ClassVar[str] = "interrupted"
    request: ClassVar[str] = '`{"type": "interrupt"}`'
    when: ClassVar[str] = "the ids of the utterances it ended, oldest first"
    utterances: list[str]


@dataclass(frozen=True)
class Pong(Reply):
    kind: ClassVar[str] = "pong"
    request: ClassVar[str] = '`{"type": "ping", "t"}`'
    when: ClassVar[str] = (
        "`t` comes back as sent (a short string or number, else null): the round-trip time"
    )
    t: Any
    server_time: float


@dataclass(frozen=True)
class Stats(Reply):
    kind: ClassVar[str] = "stats"
    request: ClassVar[str] = '`{"type": "stats"}`'
    when: ClassVar[str] = "the session's state and counters, beside `type`"
    state: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The session's state flattened beside ``type``, as the HTTP state reads."""
        return {"type": self.kind, **self.state}


@dataclass(frozen=True)
class AvatarSwitched(Reply):
    kind: ClassVar[str] = "avatar_switched"
    request: ClassVar[str] = '`{"type": "avatar", "avatar"}`'
    when: ClassVar[str] = (
        "the face shown from the next frame on (idle), or after the frames already made"
    )
    avatar: str


@dataclass(frozen=True)
class ErrorReply(Reply):
    kind: ClassVar[str] = "error"
    request: ClassVar[str] = "anything else, or a bad message"
    when: ClassVar[str] = "what was wrong; the session goes on"
    message: str


def parse_message(message: object) -> dict[str, Any]:
    """A data-channel message as a JSON object; {} for anything else (an error reply)."""
    if not isinstance(message, str | bytes):
        return {}
    try:
        data = parse_json(message)
    except MalformedJson:
        return {}
    return data if isinstance(data, dict) else {}


def echoable(value: object) -> bool:
    """Whether a client's ``id``/``t`` may be sent back as it came: a short scalar only, so a
    reply can always be serialised (an object nested 900 deep parses, yet may not dump)."""
    if isinstance(value, bool | int | float) or value is None:
        return True
    return isinstance(value, str) and len(value) <= 200


REPLY_KINDS: tuple[type[Reply], ...] = (
    Queued,
    Interrupted,
    Pong,
    Stats,
    AvatarSwitched,
    ErrorReply,
)
"""Every reply, in the order the docs list them."""


def markdown_table() -> str:
    """docs/api.md's data-channel table, from the classes."""
    rows = ["| message | reply | fields | notes |", "|---|---|---|---|"]
    for kind in REPLY_KINDS:
        names = ", ".join(f"`{f.name}`" for f in fields(kind))
        if kind is Stats:
            names = "as `GET /api/sessions/{id}`"
        rows.append(f"| {kind.request} | `{kind.kind}` | {names} | {kind.when} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
