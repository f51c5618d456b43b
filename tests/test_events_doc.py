"""The events' and data-channel replies' vocabulary (rtc/live/event_kinds.py,
rtc/webrtc/replies.py): what goes on the wire and what docs/api.md says come from the same
classes."""

from __future__ import annotations

from config import PROJECT_ROOT
from rtc.live.event_kinds import (
    EVENT_KINDS,
    ErrorEvent,
    SpeakingEnded,
    markdown_table,
)
from rtc.webrtc import replies


def test_docs_hold_the_table_the_classes_write() -> None:
    docs = (PROJECT_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, "run: python -m rtc.live.event_kinds > paste into docs"


def test_wire_form_leaves_out_optional_fields_that_are_unset() -> None:
    assert ErrorEvent("boom").to_wire() == {"type": "error", "message": "boom"}
    assert ErrorEvent("boom", utterance="u1").to_wire()["utterance"] == "u1"
    ended = SpeakingEnded("u2", interrupted=True, started=False).to_wire()
    assert ended == {
        "type": "speaking_ended",
        "utterance": "u2",
        "interrupted": True,
        "started": False,
    }
    assert len({kind.kind for kind in EVENT_KINDS}) == len(EVENT_KINDS)


def test_docs_hold_the_data_channel_table_the_replies_write() -> None:
    docs = (PROJECT_ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert replies.markdown_table() in docs, "run: python -m rtc.webrtc.replies > paste"


def test_replies_wire_form() -> None:
    assert replies.Pong(None, server_time=1.5).to_wire() == {
        "type": "pong",
        "t": None,
        "server_time": 1.5,
    }
    stats = replies.Stats({"session_id": "a", "engine": "viseme"}).to_wire()
    assert stats == {"type": "stats", "session_id": "a", "engine": "viseme"}
    assert replies.Interrupted(["u1"]).to_wire() == {"type": "interrupted", "utterances": ["u1"]}
    assert len({kind.kind for kind in replies.REPLY_KINDS}) == len(replies.REPLY_KINDS)
