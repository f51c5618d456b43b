"""The events a live session sends (data channel and SSE): one dataclass per kind, turned
into the wire's JSON object in one place (:meth:`LiveEvent.to_wire`), and documented from the
same classes (:func:`markdown_table` writes docs/api.md's table; a test compares the two).

On the wire every event is ``{"type": kind, field: value, ...}`` plus ``"session"`` (added
by the session). A field whose default is None is left out while it is None.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class LiveEvent:
    """Base of the event kinds."""

    kind: ClassVar[str] = ""
    when: ClassVar[str] = ""
    """When it is sent (the docs' third column)."""

    def to_wire(self) -> dict[str, Any]:
        """The event as the pages and clients receive it."""
        out: dict[str, Any] = {"type": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            out[f.name] = value
        return out


@dataclass(frozen=True)
class UtteranceQueued(LiveEvent):
    kind: ClassVar[str] = "utterance_queued"
    when: ClassVar[str] = "`say` accepted"
    utterance: str
    sentences: int


@dataclass(frozen=True)
class SpeakingStarted(LiveEvent):
    kind: ClassVar[str] = "speaking_started"
    when: ClassVar[str] = "the utterance's first frame is released (`latency_ms`: from `say`)"
    utterance: str
    latency_ms: float


@dataclass(frozen=True)
class SpeakingEnded(LiveEvent):
    kind: ClassVar[str] = "speaking_ended"
    when: ClassVar[str] = (
        "its last frame is released, or it was interrupted/dropped (`started` then says "
        "whether any of it played), or synthesis failed (`error`, the same message as the "
        "`error` event; after the sentences already synthesised, and nothing plays when the "
        "first sentence fails, with no `speaking_started`). Every utterance that `say` "
        "accepted gets exactly one (unless the session closes first: `session_closed` then "
        "ends them all)."
    )
    utterance: str
    interrupted: bool
    started: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class ErrorEvent(LiveEvent):
    kind: ClassVar[str] = "error"
    when: ClassVar[str] = (
        "speech synthesis (with its `utterance`) or the engine failed, or a task of the session"
    )
    message: str
    utterance: str | None = None


@dataclass(frozen=True)
class SessionClosed(LiveEvent):
    kind: ClassVar[str] = "session_closed"
    when: ClassVar[str] = "the session ended (SSE streams end after it)"
    reason: str


@dataclass(frozen=True)
class RecordingStarted(LiveEvent):
    kind: ClassVar[str] = "recording_started"
    when: ClassVar[str] = "a recording of the session's stream began"
    recording: str


@dataclass(frozen=True)
class RecordingStopped(LiveEvent):
    kind: ClassVar[str] = "recording_stopped"
    when: ClassVar[str] = "the file is complete (`reason`: stopped, max_seconds, max_bytes ...)"
    recording: str
    reason: str | None
    frames: int


@dataclass(frozen=True)
class RecordingError(LiveEvent):
    kind: ClassVar[str] = "recording_error"
    when: ClassVar[str] = (
        "the recording failed and stopped; the session goes on (`cause`: `disk` for no space "
        "or quota left, `io` for another OSError, `encoder`)"
    )
    recording: str
    message: str
    cause: str


@dataclass(frozen=True)
class PublicationState(LiveEvent):
    kind: ClassVar[str] = "publication_state"
    when: ClassVar[str] = (
        "a publication of the session's stream into Janus changed state (`connecting`, "
        "`live`, `retrying`, `failed`, `stopped`; `reason` says why)"
    )
    publication: str
    state: str
    reason: str | None = None


EVENT_KINDS: tuple[type[LiveEvent], ...] = (
    UtteranceQueued,
    SpeakingStarted,
    SpeakingEnded,
    ErrorEvent,
    SessionClosed,
    RecordingStarted,
    RecordingStopped,
    RecordingError,
    PublicationState,
)
"""Every kind, in the order the docs list them."""


def markdown_table() -> str:
    """docs/api.md's events table, from the classes."""
    rows = ["| type | fields | when |", "|---|---|---|"]
    for kind in EVENT_KINDS:
        names = []
        for f in fields(kind):
            names.append(f"`{f.name}`" + (" (optional)" if f.default is None else ""))
        rows.append(f"| `{kind.kind}` | {', '.join(names)} | {kind.when} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
