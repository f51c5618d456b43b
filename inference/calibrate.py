"""``server.py calibrate``: int8 activation ranges for a Wav2Lip checkpoint, measured on the
user's own avatar and speech (the backend's quantisation reads them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from config import AppConfig

log = logging.getLogger(__name__)


def calibrate_checkpoint(
    config: AppConfig,
    variant: Literal["gan", "nogan"],
    avatar_name: str | None,
    text: str | None,
    language: str,
    audio: Path | None,
) -> Path:
    """Run the calibration; the ranges file written. ValueError for silent audio."""
    from inference.audio_io import decode_audio
    from inference.avatar.store import AvatarStore
    from inference.engines.wav2lip import locate_checkpoint, model_inputs
    from inference.engines.wav2lip_calibrate import calibrate
    from inference.frames import StreamState
    from inference.lipsync import build_requests
    from inference.mel import frame_count, melspectrogram
    from inference.tts import create_tts

    checkpoint = locate_checkpoint(variant, config.engines)
    avatars = AvatarStore.load(
        config.avatars.avatars_dir, config.avatars.cache_dir, config.avatars.default_avatar
    )
    avatar = avatars.get(avatar_name)
    if text is not None:
        pcm = create_tts().synthesize(text, language).pcm
    elif audio is not None:
        pcm = decode_audio(audio)
    else:
        raise ValueError("calibrate needs --text or --audio")
    requests = build_requests(
        pcm,
        melspectrogram(pcm),
        avatar,
        range(frame_count(pcm.size)),
        config.engines.silence_rms,
        stream=StreamState(),
    )
    speaking = [r for r in requests if not r.silent]
    if not speaking:
        raise ValueError("the calibration audio is silent; give speech")
    batches = [model_inputs(speaking[i : i + 8]) for i in range(0, len(speaking), 8)]
    target = calibrate(checkpoint, batches)
    log.info("int8 ranges from %d frames written to %s", len(speaking), target)
    return target
