"""Publishing into a real Janus (Debian's janus 1.1.2), inside a network namespace the test
makes (tests/janus_scenarios.py explains why: Janus never gathers on loopback).

Skipped, with the reason, where Janus, ``unshare`` or root is missing (``.ci/run`` installs
Janus from Debian).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config import PROJECT_ROOT

pytestmark = pytest.mark.timeout(240)


def missing() -> str | None:
    if shutil.which("janus") is None:
        return "Janus is not installed (apt-get install janus)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) is missing"
    if os.geteuid() != 0:
        return "a network namespace of our own needs root"
    return None


def run_scenario(name: str, tmp_path: Path) -> dict[str, Any]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / f"{name}.json"
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.janus_scenarios", name, str(out)],
        cwd=PROJECT_ROOT,
        timeout=200,
        capture_output=True,
        text=True,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in result, json.dumps(result, indent=1)[-6000:]
    return result


def test_publish_subscribe_survive_a_janus_restart_and_leave_cleanly(tmp_path: Path) -> None:
    r = run_scenario("publish", tmp_path)
    assert r["post_status"] == 201, r["post_body"]
    assert r["post_body"]["kind"] == "janus" and r["post_body"]["room"] == 1234
    assert r["post_body"]["state"] in ("connecting", "live")
    assert r["live_after"] < 15 and r["feed_listed"]
    # A subscriber through Janus gets the avatar: video at rate, the voice, and a mouth that
    # moves with the voice.
    assert r["subscriber_fps"] >= 24, r["subscriber_fps"]
    assert r["subscriber_audio_frames"] >= 250  # 20 ms frames over ~7.5 s
    assert r["voice"] > 0.05 and r["mouth_moved"] > 3
    assert r["mouth_voice_corr"] > 0.3, r["mouth_voice_corr"]
    # Janus killed: retrying at once; back to live within 10 s of Janus being back, by itself.
    assert r["state_after_kill"] == "retrying" and r["retrying_after"] < 10
    assert r["state_after_restart"] == "live" and r["live_again_after"] < 10
    assert r["after_restart"]["retries"] == 1
    assert r["changes_to_retrying"] >= 1  # every state change is counted in /metrics
    # The session's own peer never stopped meanwhile.
    assert r["session_max_gap"] < 0.5, r["session_max_gap"]
    assert r["session_frames_during_outage"] >= 20 * r["outage_seconds"]
    # DELETE leaves the room and frees the receivers; cycles do not pile anything up.
    assert r["delete_status"] == 200 and r["get_after_delete"] == 404
    assert r["publishers_after_delete"] == 0 and r["receivers_after_delete"] == 1
    first, _, last = r["held_after_cycles"]
    for name in ("avatar_os_threads", "process_open_fds", "avatar_asyncio_tasks"):
        assert last[name] <= first[name] + 2, (name, r["held_after_cycles"])


def test_bad_targets_get_clear_errors_and_a_deleted_room_is_handled(tmp_path: Path) -> None:
    r = run_scenario("bad_input", tmp_path)
    expected = {
        "unreachable": 502,
        "not_janus": 502,
        "no_room": 404,
        "create_pinned": 201,
        "wrong_pin": 403,
        "bad_kind": 400,
        "room_not_int": 400,
        "no_stream": 404,
    }
    for case, status in expected.items():
        assert r[case]["status"] == status, (case, r[case])
        assert r[case]["seconds"] < 15, (case, r[case])  # never a hang
        if status != 201:
            assert r[case]["reply"]["error"], case
    assert "no room 987654" in r["no_room"]["reply"]["error"]
    assert "wrong pin" in r["wrong_pin"]["reply"]["error"]
    # The room destroyed under live publications: made again where create_room says so,
    # failed with the reason where not.
    assert r["recreated"][0] == "live" and r["recreated_retries"] == 1
    assert r["room_gone"][0] == "failed" and "no such room" in r["room_gone_reason"]
    # A room that takes H.264 only gets the stream's H.264 encoder (added beside VP8).
    assert r["h264_status"] == 201 and r["h264_live"] == "live"
    assert "video/H264" in r["h264_encoders"]
    assert r["h264_watch"]["fps"] >= 24, r["h264_watch"]


def test_serve_publish_keeps_an_always_on_stream_in_the_room(tmp_path: Path) -> None:
    r = run_scenario("always_on", tmp_path)
    assert r["state_without_janus"] in ("connecting", "retrying")  # Janus not up yet
    assert r["live"][0] == "live" and r["live"][1] < 15
    assert r["stream"] == "avatar" and r["display"] == "always-on"
    assert r["say_status"] == 202
    assert r["subscriber_fps"] >= 24 and r["voice"] > 0.05


def test_two_servers_into_one_janus_and_a_cascade_to_a_second(tmp_path: Path) -> None:
    r = run_scenario("scale_out", tmp_path)
    assert r["live"] == ["live", "live"]
    # Two avatar servers (two processes) publish two streams into one room.
    assert r["displays_a"] == ["one", "two"]
    for feed in ("a_one", "a_two"):
        assert r[feed]["fps"] >= 24 and r[feed]["audio_frames"] >= 100, (feed, r[feed])
    # The first is cascaded to a second Janus: its viewers get it from there.
    assert r["displays_b"] == ["one"] and len(r["relays"]) == 1
    assert r["b_one"]["fps"] >= 24 and r["b_one"]["audio_frames"] >= 100, r["b_one"]
    # Deleting the publication removes the remote publisher as well.
    assert r["b_after_delete"] == 0


def test_a_whep_player_plays_the_avatar_from_janus(tmp_path: Path) -> None:
    """deploy/janus/whep: Meetecho's janus-whep-server in front of the same Janus."""
    if not (PROJECT_ROOT / "deploy" / "janus" / "whep" / "node_modules").is_dir():
        pytest.skip("npm install --prefix deploy/janus/whep has not been run")
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    r = run_scenario("whep_through_janus", tmp_path)
    assert r["whep_status"] == 201 and r["whep_type"].startswith("application/sdp")
    # A viewer starts at the stream's next keyframe (every 10 s at most; sooner when the
    # publisher is asked for one): then it plays at the stream's rate, with the voice.
    assert r["first_frame_after"] is not None and r["first_frame_after"] < 11
    assert r["fps"] >= 24, r["fps"]
    assert r["audio_frames"] >= 150
