"""What the remote TTS backends share: one HTTP POST with a timeout and bounded retries, and
the answer's audio bytes turned into pipeline speech.

Plain ``urllib`` in the caller's worker thread (the server runs ``synthesize`` off the event
loop), so a backend needs no client library and no event loop of its own. The service's
answer is decoded in this process with PyAV: unlike an upload it comes from a service the
operator configured, and a child process per sentence (what uploads get) would add about
0.3 s to every sentence's latency. Garbage, empty or endless answers are errors, never a hang.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from inference.audio_io import AudioDecodeError, decode_audio, decode_source
from inference.tts.base import Speech, TtsError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 50 * 1024 * 1024
"""The most audio one answer may carry (about 50 min of 128 kbit/s MP3)."""
MAX_SPEECH_SECONDS = 300.0
"""Longest speech accepted from one request (a sentence is seconds; more is a broken service)."""


@dataclass(frozen=True)
class HttpSettings:
    """How a remote backend talks to its service."""

    timeout: float = 30.0
    """Seconds for one request, connect to last byte."""
    retries: int = 2
    """Further attempts after a connection error, a timeout or a 5xx answer."""
    backoff: float = 0.3
    """Seconds before the first retry (doubled for each next one)."""


def post_json(url: str, body: dict[str, Any], headers: dict[str, str], http: HttpSettings) -> bytes:
    """POST ``body`` as JSON to ``url``; the answer's bytes. TtsError saying what the service
    did (its status and the start of its message) once the retries are spent."""
    data = json.dumps(body).encode()
    request_headers = {"Content-Type": "application/json", **headers}
    delay = http.backoff
    for attempt in range(http.retries + 1):
        request = urllib.request.Request(url, data=data, headers=request_headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=http.timeout) as resp:
                answer: bytes = resp.read(MAX_ANSWER_BYTES + 1)
            if len(answer) > MAX_ANSWER_BYTES:
                raise TtsError(f"TTS service at {url} answered more than {MAX_ANSWER_BYTES} bytes")
            return answer
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip()
            error = TtsError(f"TTS service at {url} answered {e.code}: {detail or e.reason}")
            if e.code < 500:  # the request itself is wrong: retrying will not help
                raise error from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            error = TtsError(f"TTS service at {url} did not answer: {reason}")
        if attempt < http.retries:
            log.warning("%s; retrying in %.1f s", error, delay)
            time.sleep(delay)
            delay *= 2
    raise error


def speech_from_audio(data: bytes, language: str, source: str) -> Speech:
    """The service's audio (MP3, WAV, OGG/Opus ...: detected from the bytes) as pipeline
    speech. No timings: the viseme engine reads the mouth from the sound itself."""
    if not data:
        raise TtsError(f"{source} answered no audio (an empty body)")
    try:
        pcm = decode_audio(data, max_seconds=MAX_SPEECH_SECONDS)
        native = decode_source(data, max_seconds=MAX_SPEECH_SECONDS)
    except AudioDecodeError as e:
        raise TtsError(f"{source} answered audio that does not decode: {e}") from None
    pcm.setflags(write=False)  # shared between sessions and threads
    return Speech(pcm=pcm, phonemes=(), words=(), language=language, source=native)
