"""``serve --publish`` targets (rtc/outputs/publications.py:parse_target): what the command
line accepts, and a clear message for what it does not (no Janus needed)."""

from __future__ import annotations

import pytest

from rtc.outputs.publications import parse_target


def test_a_full_target() -> None:
    body = parse_target(
        "janus:http://10.0.0.2:8088/janus#room=1234&feed=42&display=Lea&pin=1&create_room=1"
    )
    assert (body.url, body.room, body.feed, body.display) == (
        "http://10.0.0.2:8088/janus",
        1234,
        42,
        "Lea",
    )
    assert body.pin == "1" and body.create_room is True and body.relays == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "expected janus:"),
        ("janus:ftp://x/janus#room=1", r"http\(s\) API URL"),
        ("janus:http://x/janus", "'room' is required"),
        ("janus:http://x/janus#room=abc", "room"),
        ("janus:http://x/janus#room=1&colour=red", "unknown setting 'colour'"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_target(text)
