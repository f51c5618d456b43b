"""The options every server.py command shares: engines, avatars, TTS (server.py adds each
command's own)."""

from __future__ import annotations

import argparse
from pathlib import Path

from config import AvatarConfig, EngineConfig, TtsConfig
from inference.tts.cli import add_tts_options


def device_name(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N (N a GPU index)."""
    name, colon, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (name == "cuda" and colon and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: use auto, cpu, cuda or cuda:N (N = 0, 1, ...)")


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return int(text)


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Engine, avatar and TTS options (every command makes faces speak)."""
    defaults = EngineConfig()
    p.add_argument(
        "--checkpoints",
        type=Path,
        default=defaults.checkpoints_dir,
        help="folder holding Wav2Lip checkpoints by their usual names",
    )
    p.add_argument("--gan", type=Path, default=None, help="Wav2Lip GAN checkpoint file")
    p.add_argument("--nogan", type=Path, default=None, help="Wav2Lip NOGAN checkpoint file")
    p.add_argument(
        "--device",
        default=defaults.device,
        type=device_name,
        metavar="auto|cpu|cuda|cuda:N",
        help="where Wav2Lip runs (auto: the first CUDA GPU if torch sees one, else the CPU)",
    )
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=defaults.max_batch,
        metavar="N",
        help="largest batch of frames one engine call takes (all sessions' frames share it)",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "torch-bf16", "openvino", "openvino-bf16", "openvino-int8"),
        help="CPU backend for Wav2Lip (int8 only when chosen explicitly)",
    )
    p.add_argument(
        "--cuda-graphs",
        default=defaults.cuda_graphs,
        choices=("auto", "on", "off"),
        help="replay Wav2Lip batch buckets from CUDA graphs on a GPU (auto: if capture works)",
    )
    p.add_argument(
        "--silence-rms",
        type=float,
        default=defaults.silence_rms,
        help="windows quieter than this RMS keep the mouth closed and skip the model",
    )
    p.add_argument(
        "--avatars",
        type=Path,
        default=AvatarConfig().avatars_dir,
        help="folder of avatars (photos, videos, drawn-character folders)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=AvatarConfig().cache_dir,
        help="folder for prepared-avatar data",
    )
    p.add_argument(
        "--plain-paste",
        action="store_true",
        help="paste the mouth box as is instead of feathering it into the face",
    )
    avatars = AvatarConfig()
    p.add_argument("--no-idle-motion", dest="idle_motion", action="store_false",
                   help="keep a still photo still (no head sway or breathing)")  # fmt: skip
    p.add_argument("--avatar-uploads", type=Path, default=None, metavar="DIR",
                   help="where uploaded avatars are kept (default: AVATARS/uploaded)")  # fmt: skip
    p.add_argument("--max-avatar-bytes", type=int, default=avatars.max_upload_bytes,
                   help="largest avatar upload (POST /api/avatars)")  # fmt: skip
    p.add_argument("--max-avatar-seconds", type=float, default=avatars.max_upload_seconds,
                   help="longest uploaded avatar video loop, in seconds")  # fmt: skip
    p.add_argument(
        "--max-text",
        type=int,
        default=TtsConfig().max_text_chars,
        help="longest text accepted, in characters",
    )
    add_tts_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
