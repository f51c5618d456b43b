"""The command line (`python server.py render|prepare`), run as a user runs it: a subprocess."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from config import (
    PROJECT_ROOT,
    AppConfig,
    EngineConfig,
    HttpConfig,
    OutputConfig,
    RealtimeConfig,
)
from inference.frames import SAMPLE_RATE
from inference.tts import TextToSpeech
from server import build_config, build_parser
from tests.media import decode_mp4, encode_audio


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    (root / "checkpoints").mkdir()
    return {"root": root, "cache": root / "cache", "checkpoints": root / "checkpoints"}


def run(dirs: dict[str, Path], *args: str) -> subprocess.CompletedProcess[str]:
    """``python server.py ARGS`` in the project folder, with tmp cache and checkpoints."""
    command = [sys.executable, "server.py", *args]
    if args and args[0] in ("render", "prepare"):
        command += ["--cache", str(dirs["cache"]), "--checkpoints", str(dirs["checkpoints"])]
    return subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if " ERROR " in line]


def test_render_text_writes_an_mp4(dirs: dict[str, Path]) -> None:
    out = dirs["root"] / "hello.mp4"
    result = run(
        dirs,
        "render",
        "--text",
        "Привет! Как дела?",
        "--language",
        "ru",
        "--engine",
        "viseme",
        "--avatar",
        "cartoon",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    mp4 = decode_mp4(out)
    assert mp4.video_codec == "h264" and mp4.audio_codec == "aac"
    assert 0.8 < mp4.video_duration < 3.0
    assert abs(mp4.video_duration - mp4.audio_duration) <= 0.040
    assert "wrote" in result.stderr and "Traceback" not in result.stderr


def test_render_audio_file(dirs: dict[str, Path], espeak_tts: TextToSpeech) -> None:
    speech = np.asarray(espeak_tts.synthesize("Мама мыла раму.", "ru").pcm)
    audio = encode_audio(dirs["root"] / "speech.wav", speech, SAMPLE_RATE, "pcm_s16le", "wav")
    out = dirs["root"] / "from-audio.mp4"
    result = run(dirs, "render", "--audio", str(audio), "--engine", "viseme", "--out", str(out))
    assert result.returncode == 0, result.stderr
    mp4 = decode_mp4(out)
    assert mp4.video_duration == pytest.approx(len(speech) / SAMPLE_RATE, abs=0.041)


def test_render_with_a_bad_choice_says_what_to_change(dirs: dict[str, Path]) -> None:
    out = dirs["root"] / "never.mp4"
    result = run(
        dirs,
        "render",
        "--text",
        "Привет",
        "--engine",
        "viseme",
        "--avatar",
        "nobody",
        "--out",
        str(out),
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert "unknown avatar 'nobody'" in line and "astronaut" in line
    assert not out.exists()


def test_prepare_the_astronaut(dirs: dict[str, Path]) -> None:
    result = run(dirs, "prepare", str(PROJECT_ROOT / "avatars" / "astronaut.jpg"))
    assert result.returncode == 0, result.stderr
    assert list(dirs["cache"].glob("*.json"))
    assert "prepared" in result.stderr


def test_prepare_without_a_face_fails_in_one_line(dirs: dict[str, Path]) -> None:
    wall = dirs["root"] / "wall.png"
    cv2.imwrite(str(wall), np.full((240, 320, 3), (180, 200, 210), np.uint8))
    result = run(dirs, "prepare", str(wall))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert "no face found" in line and "wall.png" in line
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("render",),  # neither --text nor --audio, and no --out
        ("render", "--text", "Привет"),  # no --out
        ("render", "--text", "a", "--audio", "b.wav", "--out", "x.mp4"),  # both sources
        ("fly",),  # no such command
        ("prepare",),  # no path
    ],
)
def test_bad_usage_exits_2(dirs: dict[str, Path], args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "server.py", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "render", "prepare"])
def test_cuda_graphs_flag_reaches_the_engine_config(command: str) -> None:
    parser = build_parser()
    extra = {"serve": [], "render": ["--out", "x.mp4", "--text", "a"], "prepare": ["x.jpg"]}[
        command
    ]
    config = build_config(parser.parse_args([command, "--cuda-graphs", "off", *extra]))
    assert config.engines.cuda_graphs == "off"
    default = build_config(parser.parse_args([command, *extra]))
    assert default.engines.cuda_graphs == EngineConfig().cuda_graphs == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--cuda-graphs", "yes", *extra])


def test_device_takes_a_gpu_index_and_max_batch_a_count() -> None:
    parser = build_parser()
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        config = build_config(parser.parse_args(["serve", "--device", device]))
        assert config.engines.device == device
    config = build_config(parser.parse_args(["serve", "--max-batch", "64"]))
    assert config.engines.max_batch == 64
    assert build_config(parser.parse_args(["serve"])).engines.max_batch == EngineConfig().max_batch
    for bad in (["--device", "gpu"], ["--device", "cuda:x"], ["--max-batch", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", *bad])


def test_connect_timeout_flag_reaches_the_config() -> None:
    parser = build_parser()
    config = build_config(parser.parse_args(["serve", "--connect-timeout", "2.5"]))
    assert config.realtime.connect_timeout_seconds == 2.5
    default = build_config(parser.parse_args(["serve"]))
    assert default.realtime.connect_timeout_seconds == 15.0
    assert RealtimeConfig().connect_timeout_seconds == 15.0


@pytest.mark.parametrize(
    ("flag", "value", "where", "field"),
    [
        ("--max-recording-bytes", "1048576", "outputs", "max_recording_bytes"),
        ("--video-bitrate", "600000", "realtime", "video_bitrate"),
    ],
)
def test_media_flags_reach_the_config(flag: str, value: str, where: str, field: str) -> None:
    parser = build_parser()
    config = build_config(parser.parse_args(["serve", flag, value]))
    assert getattr(getattr(config, where), field) == int(value)
    default = build_config(parser.parse_args(["serve"]))
    assert getattr(getattr(default, where), field) == getattr(getattr(AppConfig(), where), field)


def test_every_serve_option_is_a_field_of_its_config_section() -> None:
    """serve's options are named after the fields of the config sections (argparse dest), so
    each section is built from them in one place, with no default restated in server.py."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.choices["serve"]
    shared = {a.dest for a in sub.choices["render"]._actions}  # engine and avatar options
    sections = (HttpConfig, RealtimeConfig, OutputConfig)
    section_fields = [{f.name for f in dataclasses.fields(kind)} for kind in sections]
    assert not set.intersection(*section_fields)  # a field belongs to one section
    every: set[str] = set().union(*section_fields)
    own = {a.dest for a in serve._actions} - shared - {"help", "engine"}
    assert own <= every, own - every
    built = build_config(parser.parse_args(["serve"]))
    # The command line's defaults are the sections' ($AVATAR_TOKEN aside, when set).
    assert dataclasses.replace(built.http, token=None, viewer_token=None) == HttpConfig()
    assert built.realtime == RealtimeConfig() and built.outputs == OutputConfig()
