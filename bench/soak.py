"""Soak: hours of speech and a connect/disconnect storm, watching for leaks and drift.

    python bench/soak.py                                   # 4 sessions x 60 s, 50 cycles
    python bench/soak.py --sessions 2,4                    # soak 2, then 4 sessions
    python bench/soak.py --sessions 4 --seconds 1800 --cycles 200     # the long run (~35 min)

The server runs in its own process (``python server.py serve --ice-loopback``, like
production); aiortc clients in this process play the browsers, on loopback only.

* soak: N sessions speak continuously (each says the next sentence as soon as the previous
  one ended) for ``--seconds``. Reported: the server's resident memory after warm-up and at
  the end, fresh frames per second per session (slots the server did not repeat or skip),
  frames repeated/skipped, and the lip-sync lag measured at the start and at the end from
  what the clients received (mouth movement against the audio envelope, cross-correlated on
  the sender's timeline, as a browser lines the tracks up). Drift = end lag - start lag.
* storm: ``--cycles`` times a client connects, receives frames (every other one also says a
  word) and leaves, alternately by DELETE and by just closing its peer (a closed tab). Then
  the server's asyncio tasks, threads and open file descriptors (read from /metrics) are
  compared with their level before the storm.

Replaces the section "## Soak (bench/soak.py)" of docs/benchmarks.md (unless --no-docs).
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/soak.py` from anywhere
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.report import cpu_model, write_section  # noqa: E402
from config import PROJECT_ROOT  # noqa: E402
from inference.avatar.store import AvatarStore  # noqa: E402
from inference.frames import Box  # noqa: E402
from rtc.webrtc.ice import use_loopback_ice  # noqa: E402
from tests.browser_support import running_server  # noqa: E402
from tests.realtime_peer import (  # noqa: E402
    Received,
    TestClient,
    audio_envelope,
    cross_correlation_lag,
    mouth_activity,
    viewer_timelines,
)

SECTION = "## Soak (bench/soak.py)"
SENTENCES = (
    "Раз, два, три, четыре, пять.",
    "Папа купил большую карту мира.",
    "Мама мыла раму.",
    "Сегодня хорошая погода, пойдём гулять.",
)
WINDOW = 12.0
"""Seconds of speech cross-correlated at the start and at the end of the soak."""
WARMUP = 15.0
"""Seconds after the sessions start before the memory baseline is taken (encoders, jitter
buffers and allocator pools fill up first; at most a quarter of the run)."""
MEMORY_EVERY = 10.0
"""Seconds between memory samples."""


@dataclass
class Speaker:
    """One soak session: its client, the idle mouth, and the lag measured per window."""

    client: TestClient
    reference: np.ndarray | None = None
    lags: dict[str, tuple[float, float]] = field(default_factory=dict)
    """window name -> (lag seconds, correlation)."""
    utterances: int = 0
    errors: list[str] = field(default_factory=list)


def machine() -> str:
    """CPU and core count, Python and the media stack's versions."""
    import aiortc
    import av

    return (
        f"nproc {os.cpu_count()}, {cpu_model()}; Python {platform.python_version()}, "
        f"aiortc {aiortc.__version__}, PyAV {av.__version__}"
    )


async def scrape(url: str) -> dict[str, float]:
    """The server's /metrics as ``name{label=value,...}`` -> value."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def leak_figures(metrics: dict[str, float]) -> dict[str, float]:
    """Tasks, non-pool threads, open fds and live sessions of the server."""
    threads = sum(
        v
        for k, v in metrics.items()
        if k.startswith("avatar_threads{") and "group=asyncio" not in k and "group=render" not in k
    )
    return {
        "tasks": metrics.get("avatar_asyncio_tasks", float("nan")),
        "threads": threads,
        "pool threads": sum(
            v
            for k, v in metrics.items()
            if k.startswith("avatar_threads{") and ("group=asyncio" in k or "group=render" in k)
        ),
        "fds": metrics.get("process_open_fds", float("nan")),
        "sessions": metrics.get("avatar_sessions", float("nan")),
    }


def mouth_box(avatar: str) -> Box:
    """The avatar's face box, to keep only that part of each received frame."""
    with tempfile.TemporaryDirectory() as cache:
        return (
            AvatarStore.load(PROJECT_ROOT / "avatars", Path(cache), avatar)
            .get(avatar)
            .frames[0]
            .box
        )


def forget(received: Received) -> None:
    """Drop what a client recorded (long runs would otherwise keep every frame)."""
    for name in ("video_times", "video_pts", "mouth", "audio_times", "audio_pts", "audio"):
        getattr(received, name).clear()


async def measure_lag(speaker: Speaker, state: dict[str, Any]) -> tuple[float, float]:
    """Lip-sync lag over what the client received since the last :func:`forget`."""
    received = speaker.client.received
    if "video" not in state:  # the session is gone: say why instead of failing the run
        speaker.errors.append(f"session state: {state}")
        return float("nan"), float("nan")
    tv, ta = viewer_timelines(received, state["video"]["first_slot"], state["audio"]["first_slot"])
    envelope = audio_envelope(received)
    voiced = ta[envelope > 0.02]
    if voiced.size < 10 or len(received.mouth) < 10:
        return float("nan"), float("nan")
    return cross_correlation_lag(
        tv,
        mouth_activity(received, speaker.reference),
        ta,
        envelope,
        max(voiced[0] - 0.3, tv[0]),
        min(voiced[-1] + 0.3, tv[-1]),
    )


async def speak_until(speaker: Speaker, deadline: float) -> None:
    """Say one sentence after another until ``deadline`` (monotonic)."""
    client = speaker.client
    k = 0
    while time.monotonic() < deadline:
        status, reply = await client.post("/say", {"text": SENTENCES[k % len(SENTENCES)]})
        k += 1
        if status != 202:
            speaker.errors.append(f"say answered {status}: {reply}")
            await asyncio.sleep(0.5)
            continue
        uid = reply["utterance"]
        while time.monotonic() < deadline + 30:
            events = client.received.events
            # A failed utterance may end with its error event (nothing was spoken).
            if any(
                e.get("type") in ("speaking_ended", "error") and e.get("utterance") == uid
                for e in events
            ):
                break
            await asyncio.sleep(0.05)
        speaker.utterances += 1
        for event in client.received.events:
            if event.get("type") == "error":
                speaker.errors.append(str(event.get("message")))
        client.received.events.clear()  # only needed until their utterance ended


async def soak(
    url: str, sessions: int, seconds: float, avatar: str, codec: str | None
) -> dict[str, Any]:
    """N sessions speaking for ``seconds``; see the module docstring."""
    box = mouth_box(avatar)
    speakers = [Speaker(TestClient(url, mouth_box=box, video_codec=codec)) for _ in range(sessions)]
    await asyncio.gather(*(s.client.connect(avatar=avatar, language="ru") for s in speakers))
    await asyncio.gather(*(s.client.wait_for_frames(10, timeout=30) for s in speakers))
    for s in speakers:  # the idle mouth, before anyone speaks
        s.reference = np.median(np.stack(s.client.received.mouth[-5:]), axis=0)
        forget(s.client.received)
    start = time.monotonic()
    deadline = start + seconds
    states0 = await asyncio.gather(*(s.client.state() for s in speakers))
    talking = [asyncio.create_task(speak_until(s, deadline)) for s in speakers]
    await asyncio.sleep(min(WINDOW, seconds / 3))
    states = await asyncio.gather(*(s.client.state() for s in speakers))
    for s, state in zip(speakers, states, strict=True):
        s.lags["start"] = await measure_lag(s, state)
        forget(s.client.received)
    await asyncio.sleep(max(0.0, min(WARMUP, seconds / 4) - (time.monotonic() - start)))
    memory = [(await scrape(url))["process_resident_memory_bytes"]]
    memory_times = [time.monotonic() - start]
    end_window = deadline - min(WINDOW, seconds / 3)
    while time.monotonic() < end_window:  # the middle: keep memory samples, not frames
        await asyncio.sleep(min(MEMORY_EVERY, max(0.0, end_window - time.monotonic())))
        memory.append((await scrape(url))["process_resident_memory_bytes"])
        memory_times.append(time.monotonic() - start)
        if time.monotonic() < end_window:
            for s in speakers:
                forget(s.client.received)
    await asyncio.gather(*talking)
    states = await asyncio.gather(*(s.client.state() for s in speakers))
    metrics = await scrape(url)
    memory.append(metrics["process_resident_memory_bytes"])
    memory_times.append(time.monotonic() - start)
    for s, state in zip(speakers, states, strict=True):
        s.lags["end"] = await measure_lag(s, state)
    elapsed = time.monotonic() - start
    per_session = []
    for s, before, after in zip(speakers, states0, states, strict=True):
        sent = after["video"]["sent"] - before["video"]["sent"]
        repeated = after["video"]["missing"] - before["video"]["missing"]
        skipped = after["video"]["skipped"] - before["video"]["skipped"]
        per_session.append(
            {
                "fps": 25.0 * (sent - repeated) / max(1, sent + skipped),
                "sent_fps": sent / elapsed,
                "repeated": repeated,
                "skipped": skipped,
                "audio_skipped": after["audio"]["skipped"] - before["audio"]["skipped"],
                "utterances": s.utterances,
                "errors": s.errors,
                "lag_start": s.lags["start"],
                "lag_end": s.lags["end"],
                "offset": metrics.get(
                    f"avatar_session_av_offset_seconds{{engine={after['engine']},"
                    f"session={after['session_id']}}}",
                    float("nan"),
                ),
            }
        )
    await asyncio.gather(*(s.client.close() for s in speakers))
    return {
        "sessions": per_session,
        "memory": memory,
        "memory_times": memory_times,
        "seconds": elapsed,
    }


async def storm(url: str, cycles: int, avatar: str) -> dict[str, Any]:
    """Connect, receive, leave, ``cycles`` times; leaked tasks, threads and fds."""

    async def cycle(k: int) -> None:
        client = TestClient(url)
        try:
            await client.connect(avatar=avatar, language="ru")
            await client.wait_for_frames(3, timeout=20)
            if k % 2:
                await client.post("/say", {"text": "Да."})
                await client.wait_event("speaking_started", 10)
        finally:
            await client.close(delete=k % 4 < 2)  # half just drop the peer, like a closed tab

    await cycle(1)  # the first session starts the shared batcher and pools
    await wait_no_sessions(url, 20)
    before = leak_figures(await scrape(url))
    began = time.monotonic()
    for k in range(cycles):
        await cycle(k)
    took = time.monotonic() - began
    settled = await wait_no_sessions(url, 30)
    after = leak_figures(await scrape(url))
    deadline = time.monotonic() + 15  # tasks of closed peers may take a moment to finish
    while time.monotonic() < deadline and any(
        after[k] > before[k] for k in ("tasks", "threads", "fds")
    ):
        await asyncio.sleep(0.5)
        after = leak_figures(await scrape(url))
    return {"before": before, "after": after, "cycles": cycles, "seconds": took, "settled": settled}


async def wait_no_sessions(url: str, timeout: float) -> bool:
    """Wait until the server reports no live session (dropped peers take a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await scrape(url)).get("avatar_sessions", 1) == 0:
            return True
        await asyncio.sleep(0.2)
    return False


def report(soaks: list[dict[str, Any]], stormed: dict[str, Any] | None) -> Iterator[str]:
    """Markdown lines of the results."""
    for soaked in soaks:
        memory, times = soaked["memory"], soaked["memory_times"]
        growth = (memory[-1] - memory[0]) / memory[0] * 100
        shown = memory if len(memory) <= 12 else memory[:: len(memory) // 12 + 1] + memory[-1:]
        yield (
            f"Soak: {len(soaked['sessions'])} sessions speaking for "
            f"{soaked['seconds']:.0f} s. Server memory (RSS) {memory[0] / 2**20:.0f} MB "
            f"after {times[0]:.0f} s -> {memory[-1] / 2**20:.0f} MB at the end "
            f"(**{growth:+.1f}%**; peak {max(memory) / 2**20:.0f} MB; samples every "
            f"{MEMORY_EVERY:.0f} s: {', '.join(f'{m / 2**20:.0f}' for m in shown)} MB)."
        )
        yield ""
        yield (
            "| session | utterances | fresh fps | frames sent/s | repeated | skipped "
            "(video/audio) | lag start | lag end | **drift** | server A/V offset |"
        )
        yield "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for i, s in enumerate(soaked["sessions"], 1):
            (l0, c0), (l1, c1) = s["lag_start"], s["lag_end"]
            yield (
                f"| {i} | {s['utterances']} | {s['fps']:.1f} | {s['sent_fps']:.1f} | "
                f"{s['repeated']} | {s['skipped']}/{s['audio_skipped']} | "
                f"{l0 * 1000:+.0f} ms (r {c0:.2f}) | {l1 * 1000:+.0f} ms (r {c1:.2f}) | "
                f"**{(l1 - l0) * 1000:+.0f} ms** | {s['offset'] * 1000:+.0f} ms |"
            )
        failed = [e for s in soaked["sessions"] for e in s["errors"]]
        if failed:
            yield ""
            yield f"Errors: {len(failed)} (first: {failed[0]})"
        yield ""
    if stormed is not None:
        before, after = stormed["before"], stormed["after"]
        yield (
            f"Storm: {stormed['cycles']} connect/disconnect cycles in "
            f"{stormed['seconds']:.0f} s (half by DELETE, half by closing the peer; every "
            f"other one speaks); all sessions closed afterwards: "
            f"{'yes' if stormed['settled'] else 'NO'}."
        )
        yield ""
        yield "| server | before | after | leaked |"
        yield "|---|---:|---:|---:|"
        for key in ("tasks", "threads", "pool threads", "fds", "sessions"):
            yield (
                f"| {key} | {before[key]:.0f} | {after[key]:.0f} | "
                f"**{after[key] - before[key]:+.0f}** |"
            )


async def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Start the server, soak (once per session count), storm."""
    use_loopback_ice(True)
    counts = [int(n) for n in str(args.sessions).split(",") if n]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            Path(tmp),
            "--engine",
            args.engine,
            "--checkpoints",
            str(Path(tmp) / "none"),
            "--max-sessions",
            str(max(counts) + 2),
        ) as url,
    ):
        if args.client_nice:
            # The clients stand in for browsers on other machines: run them below the
            # server (started above, so it keeps its priority) so that they take only the
            # CPU the server leaves over instead of competing with it for the two cores.
            os.nice(args.client_nice)
        soaks = []
        for n in counts if args.seconds > 0 else []:
            soaks.append(await soak(url, n, args.seconds, args.avatar, args.codec))
            await wait_no_sessions(url, 20)
        stormed = await storm(url, args.cycles, args.avatar) if args.cycles > 0 else None
    return soaks, stormed


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sessions",
        default="4",
        help="concurrent speaking sessions; a list (2,4) soaks once per count",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="soak length (documented long run: 1800; 0 skips the soak)",
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=50,
        help="connect/disconnect cycles (documented: 200; 0 skips the storm)",
    )
    parser.add_argument("--engine", default="viseme", help="engine the sessions use")
    parser.add_argument("--avatar", default="astronaut")
    parser.add_argument(
        "--codec",
        default=None,
        help="video codec the clients offer first (video/H264 or video/VP8; "
        "default: aiortc's order, VP8 first, like Chromium)",
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="niceness added to the client (bench) process once the server "
        "runs (0: clients compete with the server as equals)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    soaks, stormed = asyncio.run(run(args))
    # Other work on the machine takes CPU from the server: say how busy it was.
    load = f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    lines = "\n".join(report(soaks, stormed))
    print(lines)
    print(load)
    if args.no_docs:
        return
    offered = args.codec or "aiortc's default order (VP8)"
    command = "python bench/soak.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    write_section(
        SECTION,
        f"{SECTION}\n\n"
        "Long-running sessions and a connect/disconnect storm against the server in its own "
        "process, aiortc clients in the bench process, loopback only, engine "
        f"`{args.engine}`. Fresh fps = pictures per clock slot that were neither repeated "
        "nor skipped, x 25. Lag = video minus audio of the received content (mouth movement "
        "against the audio envelope, cross-correlated on the sender's timeline; > 0: video "
        "late), over the first and the last "
        f"{WINDOW:.0f} s; drift = end - start. Server A/V offset = the tracks' released media "
        "time, audio minus video (`avatar_session_av_offset_seconds`). Leaks are read from "
        "the server's /metrics (`avatar_asyncio_tasks`, `avatar_threads` outside the bounded "
        "asyncio/render pools, `process_open_fds`). The clients decode every stream on the "
        "same CPUs as the server, so a session count beyond what the Realtime section "
        "sustains is an overload here, and its fps and lag show that overload. Clients "
        f"offer {offered} first; client niceness +{args.client_nice}.\n\n"
        "The issue's long run is `python bench/soak.py --sessions 4 --seconds 1800 --cycles "
        "200 --codec video/H264` (about 35 min; H.264 is what the pages ask for where the "
        "browser has it). Its targets: memory growth <= 5%, drift <= 40 ms, 0 leaks after "
        "200 cycles. A shorter command below is not that run.\n\n"
        f"- command: `{command}` ({time.perf_counter() - began:.0f} s)\n"
        f"- machine: {machine()}; {load}\n"
        f"- date: {time.strftime('%Y-%m-%d')}\n\n"
        f"{lines}\n",
    )


if __name__ == "__main__":
    main()
