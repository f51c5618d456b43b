"""A corpus of hostile inputs (tests/hostile/requests.json) replayed against the real server
in its own process: not one 5xx, not one dead process, every error JSON that says why, and
``GET /healthz`` answering after each request.

The audio files the corpus names are made here, at test time, with PyAV (nothing binary is
committed). Bounded: one request per case and path (about 100), each with a timeout.
"""

from __future__ import annotations

import http.client
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtc.webrtc.ice import use_loopback_ice
from tests.media import encode_channels, tone
from tests.server_process import LivePeer, ServerProcess, http_get, server_process

pytestmark = pytest.mark.timeout(240)

CORPUS = Path(__file__).parent / "hostile" / "requests.json"
UPLOAD_LIMIT = 1_000_000
"""The server's --max-upload-bytes here: small, so over-limit bodies stay quick to send."""
REQUEST_TIMEOUT = 30.0
SEND_CHUNK = 64 * 1024


def _wav_header_only(channels: int) -> bytes:
    """A WAV whose header claims ``channels`` (beyond anything FFmpeg takes) and 1 s."""
    rate, bits = 8000, 16
    block = channels * bits // 8
    data = b"\x00" * block * 100
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _make_audio(folder: Path) -> dict[str, bytes]:
    """Every audio file the corpus names."""

    def channels(
        name: str, n: int, codec: str, container: str, fmt: str = "s16", **kw: Any
    ) -> bytes:
        return encode_channels(folder / name, n, codec, container, fmt, **kw).read_bytes()

    nan = tone(440.0, 0.5, 8000)
    nan[100:400] = np.nan
    mono = channels("mono.wav", 1, "pcm_s16le", "wav")
    big_seconds = UPLOAD_LIMIT * 0.6 / 16000  # s16 mono at 8 kHz: 16,000 bytes a second
    return {
        "wav-mono-s16": mono,
        "wav-7.1-s16": channels("c8.wav", 8, "pcm_s16le", "wav"),
        "wav-16-s32": channels("c16.wav", 16, "pcm_s32le", "wav", "s32"),
        "aac-7.1": channels("c8.mp4", 8, "aac", "mp4", "flt"),
        "nut-16-s16p": channels("c16p.nut", 16, "pcm_s16le_planar", "nut"),
        "wav-nan-flt": channels("nan.wav", 2, "pcm_f32le", "wav", "flt", pcm=nan),
        "truncated-wav": mono[:30],
        "random": np.random.default_rng(7).integers(0, 256, 20_000, np.uint8).tobytes(),
        "empty": b"",
        "wav-1000-channels": _wav_header_only(1000),
        "big-wav": channels("big.wav", 1, "pcm_s16le", "wav", seconds=big_seconds),
        "too-big-wav": channels("too-big.wav", 1, "pcm_s16le", "wav", seconds=big_seconds * 2),
    }


def _multipart(spec: dict[str, Any], audio: dict[str, bytes]) -> tuple[str, list[bytes]]:
    """(Content-Type, body pieces) of an upload; pieces are made lazily small."""
    boundary = "hostile-boundary-7d1f"
    pieces: list[bytes] = []
    for name in spec.get("audio", []):
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + audio[name]
            + b"\r\n"
        )
    for index in range(spec.get("extra_fields", 0)):
        value = (f"{index:06d}" * (spec["field_bytes"] // 6 + 1))[: spec["field_bytes"]]
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="f{index}"'
            f"\r\n\r\n{value}\r\n".encode()
        )
    pieces.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", pieces


def _body(case: dict[str, Any], audio: dict[str, bytes]) -> tuple[dict[str, str], list[bytes]]:
    headers = dict(case.get("headers", {}))
    if "upload" in case:
        content_type, pieces = _multipart(case["upload"], audio)
        headers.setdefault("Content-Type", content_type)
        return headers, pieces
    if "json" in case:
        headers.setdefault("Content-Type", "application/json")
        return headers, [json.dumps(case["json"]).encode()]
    if "body_repeat" in case:
        return headers, ["".join(text * times for text, times in case["body_repeat"]).encode()]
    if "body_hex" in case:
        return headers, [bytes.fromhex(case["body_hex"])]
    return headers, [case["body"].encode()] if "body" in case else []


def send(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str],
    pieces: list[bytes],
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One raw request (the body as given, chunked or with its length); the answer."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1", "replace"))
        body = b"".join(pieces)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif body or method in ("POST", "PATCH", "PUT"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        try:
            for start in range(0, len(body), SEND_CHUNK):
                piece = body[start : start + SEND_CHUNK]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything (413/400) and closed
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (http.client.HTTPException, OSError) as e:  # no answer at all: a hang or a crash
        return 0, {}, repr(e).encode()
    finally:
        conn.close()


def expand(corpus: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(label, case, path) for every request the corpus describes."""
    for case in corpus["cases"]:
        paths = case.get("paths")
        if paths == "json_paths":
            paths = corpus["json_paths"]
        for path in paths or [case["path"]]:
            yield f"{case['name']} [{case['method']} {path}]", case, path


@pytest.fixture(scope="module")
def hostile_server(
    tmp_path_factory: pytest.TempPathFactory, avatar_cache: Path, empty_checkpoints: Path
) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("hostile") / "server.log"
    with server_process(
        log_path,
        avatar_cache,
        empty_checkpoints,
        "--max-text",
        "200",
        "--max-sessions",
        "2",
        "--max-upload-bytes",
        str(UPLOAD_LIMIT),
    ) as server:
        yield server


def test_hostile_corpus_gets_4xx_and_the_server_lives(
    hostile_server: ServerProcess, tmp_path: Path
) -> None:
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    audio = _make_audio(tmp_path)
    base = hostile_server.base
    use_loopback_ice(True)
    peer = LivePeer(base)
    failures: list[str] = []
    sent = 0
    try:
        session = peer.start()
        values = {"session": session, "stream": peer.stream}
        for label, case, path in expand(corpus):
            headers, pieces = _body(case, audio)
            status, answer_headers, body = send(
                base,
                case["method"],
                path.format(**values),
                headers,
                pieces,
                case.get("chunked", False),
            )
            sent += 1
            failures += _check(label, case["expect"], status, answer_headers, body)
            if not hostile_server.alive():
                failures.append(f"{label}: the server process died")
                break
            if not _healthy(base):
                failures.append(f"{label}: /healthz did not answer 200 afterwards")
                break
        # The live session took every foreign request without harm.
        if hostile_server.alive():
            status, raw = http_get(f"{base}/api/sessions/{session}")
            assert status == 200, raw
    finally:
        time.sleep(0.2)  # a server that just crashed is gone by then
        peer.stop(delete=hostile_server.alive())
        use_loopback_ice(False)
    assert not failures, "\n".join(failures)
    assert sent >= 90
    log = hostile_server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:3000]
    assert "unhandled error" not in log.lower(), log[-3000:]
    assert "Unhandled exception" not in log, log[-3000:]


def _healthy(base: str) -> bool:
    try:
        return http_get(base + "/healthz", 10.0)[0] == 200
    except OSError:
        return False


def _check(
    label: str, expected: list[int], status: int, headers: dict[str, str], body: bytes
) -> list[str]:
    problems = []
    if status == 0:
        return [f"{label}: no answer ({body.decode()})"]
    if status >= 500:
        problems.append(f"{label}: {status} {body[:200]!r}")
    elif status not in expected:
        problems.append(f"{label}: {status} (expected {expected}) {body[:200]!r}")
    if status >= 400:
        try:
            error = json.loads(body)["error"]
            if not isinstance(error, str) or not error.strip() or error.endswith(": "):
                problems.append(f"{label}: an empty or cut error message {error!r}")
        except (ValueError, KeyError, TypeError):
            problems.append(f"{label}: the error is not JSON {{error}}: {body[:200]!r}")
    return problems
