"""Realtime capacity and latency, per engine and backend, over real loopback WebRTC.

    python bench/realtime.py                                  # viseme + Wav2Lip CPU backends
    python bench/realtime.py --configs viseme --max-sessions 4 --no-docs

For each engine/backend it starts ``python server.py serve --ice-loopback`` (its own process,
like production) and drives it with aiortc clients in this process:

* capacity: N clients speak at once; a level is sustained when every session shows >= 24
  fresh frames per second (slots not repeated by the server) and its lip sync, measured from
  the received frames and audio by cross-correlation, is within +-40 ms;
* text -> first lip-synced frame: the server's ``speaking_started`` latency (release of the
  first frame) and, end to end, the POST until the first changed mouth frame arrives;
* microphone -> mouth: a client sends espeak speech as its microphone; the lag between what
  it sent and the mouth it receives (cross-correlation), and the server's own share.

Wav2Lip runs a synthetic checkpoint (random weights, calibrated BatchNorm): speed is real,
the mouth is not. Clients share the 2 CPUs with the server, so figures are a lower bound.
Replaces the section "## Realtime (bench/realtime.py)" of docs/benchmarks.md (unless
--no-docs).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/realtime.py` from anywhere
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402

from bench.report import cpu_model, write_section  # noqa: E402
from inference.tts import create_tts  # noqa: E402
from rtc.webrtc.ice import use_loopback_ice  # noqa: E402
from tests.browser_support import running_server  # noqa: E402
from tests.realtime_peer import (  # noqa: E402
    FakeMicrophone,
    TestClient,
    audio_envelope,
    cross_correlation_lag,
    mouth_activity,
    viewer_timelines,
)

SECTION = "## Realtime (bench/realtime.py)"
TEXT = "Раз, два, три, четыре, пять. Папа купил большую карту мира. Мама мыла раму."
SHORT = "Привет! Как дела?"
CONFIGS = (
    "viseme",
    "wav2lip-gan:torch-bf16",
    "wav2lip-gan:openvino-bf16",
    "wav2lip-gan:openvino-int8",
)


NOTE = (
    " With random Wav2Lip weights the lag and mic -> mouth figures of the Wav2Lip rows are"
    " not meaningful (correlation below 0.35: the mouth does not follow the voice); the"
    " pipeline's pairing is the same for every engine and is what the viseme rows measure."
    " Clients decoding every stream share the 2 CPUs with the server, so capacity is a"
    " lower bound (server CPU per viseme session: about 35-40% of one core)."
)


def machine() -> str:
    """CPU, core count and the media stack's versions."""
    import aiortc
    import av

    return (
        f"nproc {os.cpu_count()}, {cpu_model()}; Python {platform.python_version()}, "
        f"aiortc {aiortc.__version__}, PyAV {av.__version__}"
    )


def server_args(config: str, checkpoints: Path) -> list[str]:
    engine, _, backend = config.partition(":")
    args = ["--engine", engine, "--checkpoints", str(checkpoints)]
    return args + (["--backend", backend] if backend else [])


def write_synthetic_checkpoint(folder: Path) -> None:
    from inference.engines.wav2lip_synthetic import save_checkpoint
    from tests.test_wav2lip_model import synthetic_model

    save_checkpoint(synthetic_model(), folder / "wav2lip_gan.pth")


def server_cpu_seconds(url: str) -> float:
    """CPU seconds (user + system) used so far by the server process listening on url."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"server.py" in b" ".join(argv) and port.encode() in argv:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return float("nan")


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return await resp.json()


async def mouth_box(url: str, cache: Path | None = None) -> Any:
    """The default avatar's face box, from the server's avatar list (photo: the face);
    ``cache``: an avatar cache to prepare from (default: a new one, so detected afresh)."""
    from config import PROJECT_ROOT
    from inference.avatar.store import AvatarStore

    avatars = await get_json(url + "/api/avatars")
    folder = cache if cache is not None else Path(tempfile.mkdtemp())
    store = AvatarStore.load(PROJECT_ROOT / "avatars", folder, "astronaut")
    return store.get(avatars["default"]).frames[0].box


async def one_session_run(clients: list[TestClient], url: str) -> list[dict[str, Any]]:
    """All clients speak TEXT at once; per client: fresh fps, lip-sync lag, correlation."""
    await asyncio.gather(*(c.connect(avatar="astronaut", language="ru") for c in clients))
    await asyncio.gather(*(c.wait_for_frames(10, timeout=30) for c in clients))
    before = await asyncio.gather(*(c.state() for c in clients))
    cpu0, t0 = server_cpu_seconds(url), time.monotonic()
    await asyncio.gather(*(c.post("/say", {"text": TEXT}) for c in clients))
    await asyncio.gather(*(c.wait_event("speaking_started", 30) for c in clients))
    await asyncio.gather(*(c.wait_event("speaking_ended", 60) for c in clients))
    after = await asyncio.gather(*(c.state() for c in clients))
    cpu = (server_cpu_seconds(url) - cpu0) / (time.monotonic() - t0)
    await asyncio.gather(
        *(c.wait_for_frames(len(c.received.video_times) + 10, 30) for c in clients)
    )
    await asyncio.gather(*(c.close() for c in clients))
    out = []
    for client, b, a in zip(clients, before, after, strict=True):
        out.append(session_metrics(client, b, a) | {"cpu": cpu})
    return out


def session_metrics(client: TestClient, b: dict[str, Any], a: dict[str, Any]) -> dict[str, Any]:
    """One session's figures between two states of it (GET /api/sessions/{id}): fresh fps,
    lip-sync lag and correlation, the pipeline's counters (bench/gpu_live.py uses it too)."""
    sent = a["video"]["sent"] - b["video"]["sent"]
    repeated = a["video"]["missing"] - b["video"]["missing"]
    skipped = a["video"]["skipped"] - b["video"]["skipped"]
    received = client.received
    tv, ta = viewer_timelines(received, a["video"]["first_slot"], a["audio"]["first_slot"])
    envelope = audio_envelope(received)
    speech = ta[envelope > 0.02]
    lag, corr = float("nan"), float("nan")  # no speech arrived: an overloaded level
    if speech.size and received.mouth:
        lag, corr = cross_correlation_lag(
            tv, mouth_activity(received), ta, envelope, speech[0] - 0.3, speech[-1] + 0.3
        )
    # Fresh pictures per slot of the clock: repeats and slots skipped by a late sender
    # both count against it.
    fresh = 25.0 * (sent - repeated) / max(1, sent + skipped)
    return {
        "fps": fresh,
        "lag": lag,
        "corr": corr,
        "expired": a["pipeline"]["expired"] - b["pipeline"]["expired"],
        "late": a["pipeline"]["late"] - b["pipeline"]["late"],
        "speech": a["pipeline"]["speech_frames"] - b["pipeline"]["speech_frames"],
        "batcher_ms": a["batcher"]["latency_ms"],
    }


async def text_latency(url: str, box: Any, codec: str | None, runs: int = 3) -> tuple[float, float]:
    """Median server latency (say -> first frame released) and end-to-end (say -> first
    changed mouth frame received), in ms."""
    server, e2e = [], []
    for _ in range(runs):
        client = TestClient(url, mouth_box=box, video_codec=codec)
        await client.connect(avatar="astronaut", language="ru")
        await client.wait_for_frames(10, timeout=30)
        reference = client.received.mouth[-1].astype(np.float32)
        count = len(client.received.mouth)
        t0 = time.monotonic()
        await client.post("/say", {"text": SHORT})
        started = await client.wait_event("speaking_started", 30)
        deadline = time.monotonic() + 10
        arrived = None
        while arrived is None and time.monotonic() < deadline:
            crops, times = client.received.mouth, client.received.video_times
            for i in range(count, len(crops)):
                if np.abs(crops[i].astype(np.float32) - reference).mean() > 2.0:
                    arrived = times[i]
                    break
            count = len(crops) if arrived is None else count
            await asyncio.sleep(0.01)
        await client.close()
        server.append(started["latency_ms"])
        if arrived is not None:
            e2e.append((arrived - t0) * 1000)
    return float(np.median(server)), float(np.median(e2e)) if e2e else float("nan")


async def mic_latency(url: str, box: Any, codec: str | None) -> tuple[float, float, float]:
    """(end-to-end ms, server share ms, correlation) for speech sent as a microphone."""
    voice = create_tts().synthesize("Раз, два, три. Папа, мама, баба.", "ru").pcm
    microphone = FakeMicrophone(voice, start_delay=0.6)
    client = TestClient(url, mouth_box=box, microphone=microphone, video_codec=codec)
    await client.connect(avatar="astronaut")
    await client.wait_for_frames(5, timeout=30)
    await client.wait_for_frames(
        len(client.received.video_times) + round((0.6 + voice.size / 16000 + 1.0) * 25), timeout=60
    )
    state = await client.state()
    await client.close()
    assert microphone.speech_started is not None
    sent = np.array(
        [float(np.sqrt(np.mean(voice[i : i + 320] ** 2))) for i in range(0, voice.size, 320)]
    )
    t_sent = microphone.speech_started + np.arange(sent.size) * 0.02
    lag, corr = cross_correlation_lag(
        t_sent,
        sent,
        np.array(client.received.video_times),
        mouth_activity(client.received),
        t_sent[0] - 0.2,
        t_sent[-1] + 0.2,
        max_lag=0.8,
    )
    share = state["pipeline"]["mic_latency"]
    return -lag * 1000, (share or float("nan")) * 1000, corr


async def bench_config(
    config: str, max_sessions: int, checkpoints: Path, codec: str | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"config": config, "levels": {}}
    with (
        tempfile.TemporaryDirectory() as cache,
        running_server(
            Path(cache), *server_args(config, checkpoints), "--max-sessions", str(max_sessions + 2)
        ) as url,
    ):
        engines = await get_json(url + "/api/engines")
        engine = config.partition(":")[0]
        info = next((e for e in engines["engines"] if e["name"] == engine), None)
        if info is None or not info.get("available"):
            result["error"] = (info or {}).get("error", "engine not loaded")
            return result
        result["backend"] = info.get("backend")
        box = await mouth_box(url)
        # warm everything up
        await one_session_run([TestClient(url, mouth_box=box, video_codec=codec)], url)
        result["text_ms"] = await text_latency(url, box, codec)
        result["mic"] = await mic_latency(url, box, codec)
        for n in range(1, max_sessions + 1):
            runs = await one_session_run(
                [TestClient(url, mouth_box=box, video_codec=codec) for _ in range(n)], url
            )
            fps = min(r["fps"] for r in runs)
            lag = max((r["lag"] for r in runs), key=abs)
            ok = fps >= 24 and abs(lag) <= 0.040
            cpu = runs[0]["cpu"]
            result["levels"][n] = (fps, lag, ok, cpu)
            print(
                f"{config:28s} sessions={n}: min fresh fps {fps:5.1f}, worst lag "
                f"{lag * 1000:+4.0f} ms (corr {min(r['corr'] for r in runs):.2f}), "
                f"server CPU {cpu * 100:.0f}% {'ok' if ok else 'NOT sustained'}; per session "
                "speech/expired/late/batcher ms: "
                + ", ".join(
                    f"{r['speech']}/{r['expired']}/{r['late']}/{r['batcher_ms']:.0f}" for r in runs
                ),
                flush=True,
            )
            if not ok:
                break
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | backend | sessions sustained | per level: min fresh fps / worst lag / "
        "server CPU | text -> first frame (server / end to end) | mic -> mouth (end to "
        "end / server) |",
        "|---|---|---:|---|---|---|",
    ]
    for r in results:
        engine = r["config"].partition(":")[0]
        if "error" in r:
            lines.append(
                f"| {engine} | {r['config'].partition(':')[2]} | not run: {r['error'][:80]} | | | |"
            )
            continue
        sustained = max((n for n, (_, _, ok, _) in r["levels"].items() if ok), default=0)
        levels = "; ".join(
            f"{n}: {fps:.1f} / {lag * 1000:+.0f} ms / {cpu * 100:.0f}%"
            for n, (fps, lag, _, cpu) in r["levels"].items()
        )
        server, e2e = r["text_ms"]
        mic, share, corr = r["mic"]
        lines.append(
            f"| {engine} | {r['backend']} | {sustained} | {levels} | "
            f"{server:.0f} / {e2e:.0f} ms | {mic:.0f} / {share:.0f} ms "
            f"(corr {corr:.2f}) |"
        )
    return "\n".join(lines)


async def run(configs: list[str], max_sessions: int, codec: str | None) -> list[dict[str, Any]]:
    use_loopback_ice(True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = Path(tmp)
        if any(c.startswith("wav2lip") for c in configs):
            write_synthetic_checkpoint(checkpoints)
        for config in configs:
            results.append(await bench_config(config, max_sessions, checkpoints, codec))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help="engine[:backend] list, e.g. viseme,wav2lip-gan:openvino-int8",
    )
    parser.add_argument("--max-sessions", type=int, default=8)
    parser.add_argument(
        "--codec",
        default=None,
        help="video codec the clients offer first (video/H264 like the pages "
        "where the browser has it; default: aiortc's order, VP8 first)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    results = asyncio.run(
        run([c for c in args.configs.split(",") if c], args.max_sessions, args.codec)
    )
    elapsed = time.perf_counter() - began
    md = table(results)
    print()
    print(md)
    if args.no_docs:
        return
    command = "python bench/realtime.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    write_section(
        SECTION,
        f"{SECTION}\n\n"
        "Concurrent live sessions over loopback WebRTC (server in its own process, aiortc "
        "clients in the bench process, all on this machine), each speaking the same Russian "
        "text at once. A level is sustained when every session gets >= 24 fresh frames per "
        "second (slots the server did not have to repeat) and its lip sync, measured from the "
        "received frames and audio by cross-correlation, is within +-40 ms. Wav2Lip runs a "
        "synthetic checkpoint (random weights: real speed, meaningless mouth; its sync is "
        "measured on the mouth changing between speech and pauses).\n\n"
        f"- command: `{command}` ({elapsed:.0f} s)\n"
        f"- machine: {machine()}\n"
        f"- date: {time.strftime('%Y-%m-%d')}\n\n"
        f"{md}\n\n"
        "Text -> first frame: server = `say` until the first lip-synced frame is released; "
        "end to end = POST until that frame has arrived at the client. Mic -> mouth end to end "
        "includes the server's and the client's aiortc jitter buffers (one 20 ms packet on "
        "the server's microphone receiver, rtc/webrtc/receiving.py; one frame, 40 ms, of "
        "video completion on the aiortc client, which waits for the next frame's first "
        "packet); the server share is the engine's look-ahead (Wav2Lip 172.5 ms, viseme "
        "47.5 ms) plus scheduling (the batcher's latency, 20 ms margin, 20 ms jitter "
        "allowance, up to a slot of rounding)."
        f"{NOTE}\n",
    )


if __name__ == "__main__":
    main()
