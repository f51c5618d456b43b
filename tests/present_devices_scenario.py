"""The virtual presenter on real audio devices: a PulseAudio server of the test's own (user
mode, two null sinks), reached through PortAudio's ALSA ``pulse`` device by sounddevice.

    python -m tests.present_devices_scenario OUT.json

Speech is played into the sink ``mic_feed``; the presenter's microphone is that sink's
monitor; its voice goes to the sink ``speaker``, whose monitor is recorded. Runs in its own
process so PortAudio starts with this PulseAudio (it reads the server at initialisation).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16_000


def start_pulse(runtime: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(runtime))
    process = subprocess.Popen(
        [
            "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "-L", "module-native-protocol-unix",
            "-L", "module-null-sink sink_name=mic_feed rate=16000 channels=1",
            "-L", "module-null-sink sink_name=speaker rate=16000 channels=1",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    socket = runtime / "pulse" / "native"
    for _ in range(100):  # bounded: 10 s
        if socket.exists():
            return process
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("pulseaudio did not start")


async def scenario(out: dict[str, Any]) -> None:
    from inference.avatar.store import AvatarStore
    from inference.engines.base import create_engine
    from inference.tts import create_tts
    from rtc.live.batcher import BatcherPool
    from rtc.outputs.present import Presenter, SoundDeviceMic, SoundDeviceSpeaker
    from tests.media import encode_audio

    tts = create_tts("espeak")
    voice = tts.synthesize("Раз, два, три. Папа, мама, море.", "ru").pcm
    lead = np.zeros(int(0.6 * RATE), np.float32)
    wav = encode_audio(
        Path(tempfile.mkdtemp()) / "voice.wav",
        np.concatenate((lead, voice)),
        RATE,
        "pcm_s16le",
        "wav",
    )
    store = AvatarStore.load(Path("avatars"), Path(tempfile.mkdtemp()), "astronaut")
    avatar = store.get("astronaut")
    frames: list[tuple[float, np.ndarray]] = []

    class Camera:
        def send(self, rgb: np.ndarray) -> None:
            box = avatar.frames[0].box
            frames.append((time.monotonic(), rgb[box.y1 : box.y2, box.x1 : box.x2].mean(axis=2)))

        def close(self) -> None:
            pass

    pool = BatcherPool(max_batch=8, feather=True)
    recording = Path(tempfile.mkdtemp()) / "out.raw"
    with recording.open("wb") as sink:
        recorder = subprocess.Popen(
            ["parec", "--device=speaker.monitor", "--format=s16le", "--rate=16000",
             "--channels=1", "--latency-msec=10", "--raw"],
            stdout=sink,
        )  # fmt: skip
        recorded_from = time.monotonic()
        try:
            mic = SoundDeviceMic("pulse")
            speaker = SoundDeviceSpeaker("pulse")
            out["output_latency"] = float(speaker._stream.latency)
            presenter = Presenter(
                pool.get(create_engine("viseme")), avatar, tts, mic, Camera(), speaker
            )
            player = subprocess.Popen(["paplay", "--device=mic_feed", str(wav)])
            stats = await presenter.run(seconds=0.6 + voice.size / RATE + 1.5)
            player.wait(10)
            out["mic_chunks"] = stats.mic_chunks
        finally:
            await asyncio.to_thread(pool.close)
            recorder.terminate()
            recorder.wait(5)
    sound = np.frombuffer(recording.read_bytes(), np.int16).astype(np.float32) / 32768
    times = np.array([t for t, _ in frames])
    mouths = np.stack([m for _, m in frames]).astype(np.float32)
    activity = np.abs(mouths - np.median(mouths[:5], axis=0)).reshape(len(mouths), -1).mean(1)
    out["frames"] = len(frames)
    out["mouth_moved"] = float(activity.max() / (np.median(activity[:5]) + 1))
    out["voice_out_rms"] = float(np.sqrt(np.mean(sound**2))) if sound.size else 0.0
    # Sync at the user's side: the mouth against the voice coming out of the sink, both on
    # the wall clock (the recording's samples from its start, the frames when sent).
    hop = RATE // 100
    envelope = np.array(
        [np.sqrt(np.mean(sound[k : k + hop] ** 2)) for k in range(0, sound.size - hop, hop)]
    )
    env_t = recorded_from + np.arange(len(envelope)) / 100
    grid = np.arange(times[0], times[-1], 0.005)
    mouth = np.interp(grid, times, activity)
    best, lag = -2.0, 0.0
    for shift in np.arange(-0.2, 0.2, 0.005):
        voice_on_grid = np.interp(grid + shift, env_t, envelope)
        if mouth.std() > 0 and voice_on_grid.std() > 0:
            c = float(np.corrcoef(mouth, voice_on_grid)[0, 1])
            if c > best:
                best, lag = c, float(shift)
    out["lag"], out["corr"] = lag, best


def main() -> None:
    out_path = Path(sys.argv[1])
    runtime = Path(tempfile.mkdtemp(prefix="pulse-"))
    runtime.chmod(0o700)
    os.environ.update(XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{runtime}/pulse/native")
    # PortAudio's ALSA "pulse" device: capture from the feed's monitor, play to the speaker.
    os.environ.update(PULSE_SOURCE="mic_feed.monitor", PULSE_SINK="speaker")
    pulse = start_pulse(runtime)
    result: dict[str, Any] = {}
    try:
        asyncio.run(scenario(result))
    except BaseException as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        pulse.kill()
        pulse.wait(5)
        shutil.rmtree(runtime, ignore_errors=True)
    out_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
