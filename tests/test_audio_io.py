"""Audio decoding: every container the API accepts becomes 16 kHz mono float32, and bad input
is refused with AudioDecodeError."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from inference.audio_io import AudioDecodeError, decode_audio, pcm_to_s16, resample
from inference.frames import SAMPLE_RATE
from inference.tts import TextToSpeech
from tests.media import encode_audio, encode_video, encoder_available, tone

TONE_HZ = 440.0
SECONDS = 1.5

# (suffix, container format, encoder candidates, source rate, channels)
FORMATS = [
    ("wav", "wav", ("pcm_s16le",), 44_100, 2),
    ("mp3", "mp3", ("libmp3lame", "mp3"), 44_100, 1),
    ("ogg", "ogg", ("libvorbis", "vorbis", "libopus", "opus"), 48_000, 2),
    # AAC keeps up to one 1024-sample frame of encoder padding at the end: at 44.1 kHz
    # that stays inside the tolerance (23 ms); at 22.05 kHz it would not (46 ms).
    ("m4a", "ipod", ("aac",), 44_100, 1),
    ("webm", "webm", ("libopus", "opus"), 48_000, 1),
]


def dominant_frequency(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1.0 / rate)[int(np.argmax(spectrum))])


def make_file(folder: Path, suffix: str, fmt: str, encoders: tuple[str, ...], rate: int,
              channels: int, pcm: np.ndarray) -> Path:
    """Encode with the first candidate that works in this PyAV build; skip if none does."""
    for codec in encoders:
        if not encoder_available(codec):
            continue
        try:
            return encode_audio(folder / f"tone.{suffix}", pcm, rate, codec, fmt, channels)
        except av.FFmpegError:
            continue  # e.g. FFmpeg's native vorbis encoder is "experimental"
    pytest.skip(f"this PyAV build cannot encode .{suffix} ({', '.join(encoders)})")


@pytest.mark.parametrize(("suffix", "fmt", "encoders", "rate", "channels"), FORMATS,
                         ids=[f[0] for f in FORMATS])
def test_decodes_to_16k_mono_float(tmp_path: Path, suffix: str, fmt: str,
                                   encoders: tuple[str, ...], rate: int, channels: int) -> None:
    path = make_file(tmp_path, suffix, fmt, encoders, rate, channels,
                     tone(TONE_HZ, SECONDS, rate))
    for source in (path, str(path), path.read_bytes()):
        pcm = decode_audio(source)
        assert pcm.dtype == np.float32 and pcm.ndim == 1
        assert abs(pcm.size / SAMPLE_RATE - SECONDS) <= 0.030, suffix
        assert np.abs(pcm).max() <= 1.0
        middle = pcm[SAMPLE_RATE // 4 : -SAMPLE_RATE // 4]
        assert abs(dominant_frequency(middle) - TONE_HZ) < 3.0
        # Mono mixdown keeps the level (a stereo file is not summed to double).
        assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_speech_survives_a_wav_round_trip(tmp_path: Path, espeak_tts: TextToSpeech) -> None:
    speech = np.asarray(espeak_tts.synthesize("Мама мыла раму.", "ru").pcm)
    path = encode_audio(tmp_path / "speech.wav", speech, SAMPLE_RATE, "pcm_s16le", "wav")
    pcm = decode_audio(path)
    assert pcm.size == speech.size
    assert np.abs(pcm - speech).max() <= 2.0 / 32768


def test_corrupt_bytes_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    garbage = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    wav = encode_audio(tmp_path / "ok.wav", tone(TONE_HZ, 0.5), SAMPLE_RATE, "pcm_s16le", "wav")
    for bad in (garbage, b"", b"RIFF", wav.read_bytes()[:30]):
        with pytest.raises(AudioDecodeError) as info:
            decode_audio(bad)
        assert "wav, mp3, ogg, m4a or webm" in str(info.value) or "no" in str(info.value)
    missing = tmp_path / "nothing-here.mp3"
    with pytest.raises(AudioDecodeError):
        decode_audio(missing)


def test_too_long_audio_is_refused(tmp_path: Path) -> None:
    path = encode_audio(tmp_path / "long.wav", tone(TONE_HZ, 3.0), SAMPLE_RATE, "pcm_s16le",
                        "wav")
    with pytest.raises(AudioDecodeError, match="longer than the limit of 2 s"):
        decode_audio(path, max_seconds=2.0)
    assert decode_audio(path, max_seconds=3.5).size == 3 * SAMPLE_RATE


def test_video_without_audio_is_refused(tmp_path: Path) -> None:
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(5)]
    path = encode_video(tmp_path / "silent-film.mp4", frames)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(path)
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(path.read_bytes())


def test_resample_keeps_length_and_pitch() -> None:
    pcm = tone(1000.0, 1.0, 44_100)
    out = resample(pcm, 44_100)
    assert out.dtype == np.float32 and out.size == SAMPLE_RATE
    assert abs(dominant_frequency(out) - 1000.0) < 2.0
    assert resample(pcm, SAMPLE_RATE, SAMPLE_RATE) is not None
    same = tone(300.0, 0.1)
    assert np.array_equal(resample(same, SAMPLE_RATE), same)


def test_pcm_to_s16_clips_instead_of_wrapping() -> None:
    out = pcm_to_s16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32))
    assert out.dtype == np.int16
    assert out.tolist() == [-32767, -32767, 0, 16383, 32767, 32767]
