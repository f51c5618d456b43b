"""Source-quality sound in MP4s: an upload keeps its own rate and stereo, a TTS its native
rate, while the lip-sync runs on the 16 kHz mono copy (inference/audio_io.py:decode_source)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from rtc.http.app import build_app
from rtc.services import Services
from tests.media import tone


def stereo_wav(path: Path, rate: int = 44_100, seconds: float = 1.2) -> bytes:
    """Left 440 Hz, right 660 Hz: a file whose channels differ."""
    left, right = tone(440.0, seconds, rate), tone(660.0, seconds, rate)
    samples = (np.stack([left, right], axis=1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
        for start in range(0, len(samples), 1024):
            block = samples[start : start + 1024].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes()


def mp4_audio(path: Path) -> tuple[int, int, np.ndarray, float]:
    """(rate, channels, samples (n, channels), video seconds) of an MP4."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        fps = float(video.average_rate or 25)
    planar = np.concatenate(chunks, axis=1)  # AAC decodes to planar float: (channels, n)
    return rate, channels, planar.T, frames / fps


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


async def test_an_upload_keeps_its_rate_and_stereo(
    loaded_services: Services, tmp_path: Path
) -> None:
    data = stereo_wav(tmp_path / "in.wav")
    async with TestClient(TestServer(build_app(loaded_services), host="127.0.0.1")) as client:
        form = aiohttp.FormData()
        form.add_field("audio", data, filename="in.wav", content_type="audio/wav")
        resp = await client.post("/api/generate", data=form)
        assert resp.status == 200, await resp.text()
        (tmp_path / "out.mp4").write_bytes(await resp.read())
    rate, channels, samples, video_seconds = mp4_audio(tmp_path / "out.mp4")
    assert (rate, channels) == (44_100, 2)
    middle = samples[rate // 4 : rate]
    assert abs(peak_hz(middle[:, 0], rate) - 440) < 5 and abs(peak_hz(middle[:, 1], rate) - 660) < 5
    assert abs(len(samples) / rate - video_seconds) < 0.1  # sound as long as the picture


async def test_tts_keeps_its_native_rate(loaded_services: Services, tmp_path: Path) -> None:
    async with TestClient(TestServer(build_app(loaded_services), host="127.0.0.1")) as client:
        resp = await client.post("/api/generate", json={"text": "Привет, как дела?"})
        assert resp.status == 200
        (tmp_path / "tts.mp4").write_bytes(await resp.read())
    rate, channels, samples, video_seconds = mp4_audio(tmp_path / "tts.mp4")
    assert (rate, channels) == (22_050, 1)  # espeak-ng's own rate, not the pipeline's 16 kHz
    assert float(np.sqrt(np.mean(samples**2))) > 0.01
    assert abs(len(samples) / rate - video_seconds) < 0.1
