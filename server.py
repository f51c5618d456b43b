"""Talking Avatar server.

python server.py                 # same as: python server.py serve  (http://127.0.0.1:3000)
python server.py render --text "Привет!" --language ru --out out.mp4
python server.py prepare avatars/my_photo.jpg
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from config import (
    AppConfig,
    AvatarConfig,
    EngineConfig,
    HttpConfig,
    OutputConfig,
    RealtimeConfig,
    TtsConfig,
    section,
)
from inference.cli import add_common_options
from inference.tts.cli import tts_config

log = logging.getLogger("server")


def build_parser() -> argparse.ArgumentParser:
    """The command line: serve (default), render, prepare."""
    parser = argparse.ArgumentParser(prog="server.py", description="Talking Avatar server")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the HTTP/WebRTC server (default)")
    add_common_options(serve)
    http, live, outputs = HttpConfig(), RealtimeConfig(), OutputConfig()
    serve.add_argument("--host", default=http.host, help="address to listen on")
    serve.add_argument("--port", type=int, default=http.port, help="TCP port (default 3000)")
    serve.add_argument("--engine", default=None, help="default engine for requests naming none")
    serve.add_argument(
        "--ice-server",
        dest="ice_servers",
        metavar="URL",
        action="append",
        default=[],
        help="STUN/TURN URL for WebRTC peers (repeatable; none by default)",
    )
    serve.add_argument(
        "--ice-loopback",
        action="store_true",
        help="gather 127.0.0.1 ICE candidates (local use and tests)",
    )
    serve.add_argument(
        "--max-parallel-renders",
        type=int,
        default=http.max_parallel_renders,
        help="renders of /api/generate and /api/jobs running at once",
    )
    serve.add_argument(
        "--max-waiting-renders",
        type=int,
        default=http.max_waiting_renders,
        help="renders allowed to wait for a slot (beyond: 503 with Retry-After)",
    )
    serve.add_argument(
        "--max-sessions", type=int, default=live.max_sessions, help="concurrent realtime sessions"
    )
    serve.add_argument(
        "--video-bitrate",
        type=int,
        default=live.video_bitrate,
        help="most bits per second of each stream's video (receivers' estimates lower it)",
    )
    serve.add_argument("--publish", action="append", default=[], metavar="janus:URL#room=N",
                       help="publish an always-on stream into Janus (repeatable)")  # fmt: skip
    serve.add_argument("--always-on-stream", default=outputs.always_on_stream, metavar="NAME",
                       help="the always-on stream's name (with --publish)")  # fmt: skip
    serve.add_argument("--min-video-bitrate", type=int, default=live.min_video_bitrate,
                       help="shared encoder's floor; viewers below it are reported")  # fmt: skip
    serve.add_argument("--h264-encoder", choices=("libx264", "h264_nvenc", "auto"),
                       default=live.h264_encoder,
                       help="H.264 encoder: x264, NVENC, or NVENC where it works")  # fmt: skip
    serve.add_argument("--keyframe-gap", type=float, metavar="SECONDS", default=live.keyframe_gap,
                       help="least seconds between forced keyframes of a stream")  # fmt: skip
    serve.add_argument(
        "--connect-timeout",
        dest="connect_timeout_seconds",
        metavar="SECONDS",
        type=float,
        default=live.connect_timeout_seconds,
        help="close a realtime session whose peer has not connected after "
        "this many seconds (default 15)",
    )
    serve.add_argument(
        "--max-viewers-per-stream",
        type=int,
        default=outputs.max_viewers_per_stream,
        help="WHEP/OBS viewers one live stream may have; more get 503",
    )
    serve.add_argument(
        "--recordings",
        dest="recordings_dir",
        metavar="DIR",
        type=Path,
        default=outputs.recordings_dir,
        help="folder for stream recordings (default ./recordings)",
    )
    serve.add_argument(
        "--max-recording-seconds",
        type=float,
        default=outputs.max_recording_seconds,
        help="a recording stops by itself after this long",
    )
    serve.add_argument(
        "--max-recording-bytes",
        type=int,
        default=outputs.max_recording_bytes,
        help="a recording stops by itself when its file reaches this size",
    )
    serve.add_argument(
        "--max-queued-utterances",
        type=int,
        default=live.max_queued_utterances,
        help="utterances one realtime session holds; more 'say's get 429",
    )
    serve.add_argument(
        "--max-upload-bytes",
        type=int,
        default=http.max_upload_bytes,
        help="largest audio upload /api/generate takes (whole body: 413 above)",
    )
    serve.add_argument(
        "--max-upload-seconds",
        type=float,
        default=http.max_upload_seconds,
        help="longest audio upload, after decoding (400 above)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("AVATAR_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on control endpoints "
        "(default: $AVATAR_TOKEN; none)",
    )
    serve.add_argument(
        "--viewer-token",
        default=os.environ.get("AVATAR_VIEWER_TOKEN"),
        help="a second token that opens only WHEP playback and the OBS page, "
        "for viewer links (default: $AVATAR_VIEWER_TOKEN; none)",
    )
    serve.add_argument(
        "--cors-origin",
        dest="cors_origins",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="allow this origin to call the API cross-site (repeatable; '*' any)",
    )

    render = sub.add_parser("render", help="render text or an audio file to an MP4")
    add_common_options(render)
    source = render.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="text to speak")
    source.add_argument("--audio", type=Path, help="audio file to lip-sync to")
    render.add_argument("--language", default=TtsConfig().default_language)
    render.add_argument("--engine", default=None)
    render.add_argument("--avatar", default=None)
    render.add_argument("--out", type=Path, required=True, help="output .mp4 path")
    render.add_argument("--motion-seed", type=int, default=0,
                        help="seed of a still photo's head sway (default 0)")  # fmt: skip

    calibrate = sub.add_parser(
        "calibrate", help="measure int8 ranges for --backend openvino-int8 on your avatar+speech"
    )
    add_common_options(calibrate)
    calibrate.add_argument("--variant", choices=("gan", "nogan"), default="gan")
    calibrate.add_argument("--avatar", default=None, help="avatar the server will show")
    cal_source = calibrate.add_mutually_exclusive_group(required=True)
    cal_source.add_argument("--text", help="representative text to speak")
    cal_source.add_argument("--audio", type=Path, help="representative speech recording")
    calibrate.add_argument("--language", default=TtsConfig().default_language)

    present = sub.add_parser(
        "present", help="virtual presenter: the avatar follows a server-side microphone"
    )
    add_common_options(present)
    present.add_argument(
        "--mic", required=True, help="input device (index or name; 'list' shows them)"
    )
    present.add_argument(
        "--vcam", action="store_true", help="send the frames to a virtual camera (pyvirtualcam)"
    )
    present.add_argument(
        "--speaker",
        default=None,
        help="output device for the voice (index or name; 'list' shows them)",
    )
    present.add_argument("--engine", default=None)
    present.add_argument("--avatar", default=None)

    prepare = sub.add_parser("prepare", help="detect and cache an avatar's face")
    add_common_options(prepare)
    prepare.add_argument("path", type=Path, help="photo, video or drawn-character folder")
    return parser


def build_config(args: argparse.Namespace) -> AppConfig:
    """Frozen configuration from parsed arguments."""
    engines = EngineConfig(
        checkpoints_dir=args.checkpoints,
        gan_checkpoint=args.gan,
        nogan_checkpoint=args.nogan,
        device=args.device,
        backend=args.backend,
        cuda_graphs=args.cuda_graphs,
        max_batch=args.max_batch,
        default_engine=vars(args).get("engine"),  # not every subcommand has --engine
        silence_rms=args.silence_rms,
    )
    avatars = AvatarConfig(
        avatars_dir=args.avatars,
        cache_dir=args.cache,
        feather=not args.plain_paste,
        uploads_dir=args.avatar_uploads,
        max_upload_bytes=args.max_avatar_bytes,
        max_upload_seconds=args.max_avatar_seconds,
        idle_motion=args.idle_motion,
    )
    serving = args.command == "serve"
    http = section(HttpConfig, vars(args)) if serving else HttpConfig()
    live = section(RealtimeConfig, vars(args)) if serving else RealtimeConfig()
    outputs = section(OutputConfig, vars(args)) if serving else OutputConfig()
    return AppConfig(
        engines=engines,
        tts=tts_config(vars(args)),
        avatars=avatars,
        http=http,
        realtime=live,
        outputs=outputs,
    )


def cmd_serve(config: AppConfig) -> int:
    from aiohttp import web

    from inference.threads import default_workers, named_pool
    from rtc.http.access_log import RedactingAccessLogger
    from rtc.http.app import build_app
    from rtc.services import Services
    from rtc.webrtc.h264_encoders import resolve_h264_encoder

    try:  # an encoder that cannot run is said now, not when the first browser calls
        encoder = resolve_h264_encoder(config.realtime.h264_encoder)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("H.264 streams encode with %s", encoder)
    services = Services.load(config)
    app = build_app(services)
    log.info("serving on http://%s:%d/", config.http.host, config.http.port)
    # The loop's default executor (video encoding, TTS, closing batchers): asyncio's is as
    # bounded, but its threads are nameless to the OS; one per process, set before start.
    loop = asyncio.new_event_loop()
    executor = named_pool("avatar-io", default_workers())
    loop.set_default_executor(executor)
    try:
        web.run_app(
            app,
            host=config.http.host,
            port=config.http.port,
            print=None,
            access_log_class=RedactingAccessLogger,
            loop=loop,
        )
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return 0


def cmd_render(config: AppConfig, args: argparse.Namespace) -> int:
    from inference.audio_io import decode_audio, decode_source
    from inference.render import RenderSettings, render_to_mp4
    from rtc.services import Services

    names = [args.engine] if args.engine else None
    services = Services.load(config, names) if names else Services.load(config)
    engine = services.engine(args.engine)
    avatar = services.avatars.get(args.avatar)
    t0 = time.perf_counter()
    if args.text is not None:
        speech = services.tts.synthesize(
            services.check_text(args.text), services.language(args.language)
        )
        pcm, phonemes, source = speech.pcm, speech.phonemes, speech.source
    else:  # the user's own file: decoded in process, kept at its own rate in the MP4
        pcm, phonemes, source = decode_audio(args.audio), (), decode_source(args.audio)
    tts = time.perf_counter() - t0

    def progress(done: int, total: int) -> None:
        sys.stderr.write(f"\rrendering: {done}/{total} frames")
        if done == total:
            sys.stderr.write("\n")

    stats = render_to_mp4(
        pcm,
        avatar,
        engine,
        args.out,
        phonemes=phonemes,
        settings=RenderSettings(
            config.engines.silence_rms,
            config.avatars.feather,
            args.motion_seed if config.avatars.idle_motion else None,
        ),
        progress=progress,
        source=source,
    )
    log.info(
        "wrote %s: %.2f s of video with %s (tts %.2f s, lip-sync %.2f s, encode %.2f s)",
        args.out,
        stats.duration,
        engine.name,
        tts,
        stats.lipsync,
        stats.encode,
    )
    return 0


def cmd_calibrate(config: AppConfig, args: argparse.Namespace) -> int:
    from inference.calibrate import calibrate_checkpoint

    calibrate_checkpoint(config, args.variant, args.avatar, args.text, args.language, args.audio)
    return 0


def cmd_present(config: AppConfig, args: argparse.Namespace) -> int:
    from rtc.outputs.present import run_presenter

    return run_presenter(config, args.mic, args.speaker, args.vcam, args.engine, args.avatar)


def cmd_prepare(config: AppConfig, path: Path) -> int:
    from inference.avatar.store import load_avatar

    avatar = load_avatar(path, config.avatars.cache_dir, progress=True)
    log.info("prepared %s: %s", path, avatar.describe())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if not raw or (raw[0].startswith("-") and raw[0] not in ("-h", "--help")):
        raw.insert(0, "serve")
    parser = build_parser()
    args = parser.parse_args(raw)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = build_config(args)
    try:
        if args.command == "render":
            return cmd_render(config, args)
        if args.command == "calibrate":
            return cmd_calibrate(config, args)
        if args.command == "present":
            return cmd_present(config, args)
        if args.command == "prepare":
            return cmd_prepare(config, args.path)
        return cmd_serve(config)
    except (ValueError, RuntimeError, OSError) as e:
        # Bad input or an engine that cannot run: one readable line, no trace.
        log.error("%s", e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
