"""One stream, many viewers: what each added WHEP viewer costs the server.

    python bench/fanout.py                       # 1, 4, 16 and 32 viewers, 20 s each
    python bench/fanout.py --levels 1 8 --seconds 10 --no-docs

Starts ``python server.py serve --ice-loopback`` (its own process), connects one session
that speaks without pause, then for each level starts that many WHEP viewers in separate
client processes (16 per process: fewer processes to switch between on a small shared
machine; loopback). One viewer per process decodes what it gets (the proof that the stream
plays); the others count each complete frame that reaches their RTP receiver without decoding
it, so the clients leave the CPUs to the server. Per level:

* server CPU: CPU seconds of the server process over the window, as % of one core;
* fps: complete frames per second each viewer received (minimum and median over viewers),
  and the server's fresh rate (slots with a new picture, not a repeat);
* lag between viewers: the same encoded frame (identical bytes: one encoder) reaches every
  viewer; the spread of its arrival times across viewers, median and 95th percentile;
* memory: the server's resident set at the end of the window;
* drops: packets the server's fan-out dropped for lagging viewers (/metrics).

Clients and server share this machine's CPUs, so on a small machine the clients' own SRTP
decryption competes with the server: the figures are a lower bound for a dedicated server.
(Starving the viewers instead, at nice 10, made it worse: viewers that fall behind ask for
retransmissions and keyframes, which the server then sends.)
Replaces the section "## Fan-out (bench/fanout.py)" of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/fanout.py` from anywhere
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402

from bench.report import cpu_model, write_section  # noqa: E402

SECTION = "## Fan-out (bench/fanout.py)"
TEXT = "Раз, два, три, четыре, пять. Папа купил большую карту мира. Мама мыла раму."
PER_PROCESS = 16
SETTLE = 6.0
"""Seconds between starting a level's viewers and its measurement window."""


# --- the viewer processes ---------------------------------------------------------------


class CountingSink:
    """Stands in for an aiortc receiver's decoder queue: records each complete frame (its
    bytes' hash and arrival time) instead of decoding it."""

    def __init__(self, log: list[tuple[str, float]]) -> None:
        self.log = log
        self._end = threading.Event()

    def put(self, item: Any) -> None:
        if item is None:
            self._end.set()
            return
        _codec, frame = item
        self.log.append((hashlib.blake2b(frame.data, digest_size=8).hexdigest(), time.monotonic()))

    def get(self, *args: Any, **kwargs: Any) -> None:
        self._end.wait()  # the decoder thread waits here until the receiver stops


async def one_viewer(url: str, stream: str, decode: bool, log: list[tuple[str, float]]) -> Any:
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from rtc.webrtc.ice import rtc_configuration

    pc = RTCPeerConnection(rtc_configuration([]))
    video = pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    decoded: list[float] = []
    drains: list[asyncio.Task[None]] = []
    if not decode:
        video.receiver._RTCRtpReceiver__decoder_queue = CountingSink(log)  # type: ignore[attr-defined]

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def drain() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    if track.kind == "video" and decode:
                        frame.to_ndarray(format="yuv420p")
                        decoded.append(time.monotonic())

        drains.append(asyncio.ensure_future(drain()))

    await pc.setLocalDescription(await pc.createOffer())
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/whep/{stream}",
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        ) as resp,
    ):
        if resp.status != 201:
            raise RuntimeError(f"WHEP answered {resp.status}: {await resp.text()}")
        await pc.setRemoteDescription(RTCSessionDescription(await resp.text(), "answer"))
    return pc, decoded


async def viewers_main(args: argparse.Namespace) -> None:
    from rtc.webrtc.ice import use_loopback_ice

    use_loopback_ice(True)
    logs: list[list[tuple[str, float]]] = [[] for _ in range(args.count)]
    made = [await one_viewer(args.url, args.stream, k == 0, logs[k]) for k in range(args.count)]
    start, stop = args.start_at, args.start_at + args.seconds
    await asyncio.sleep(max(0.0, stop - time.monotonic()) + 0.5)
    result = []
    for k, (pc, decoded) in enumerate(made):
        frames = [("", t) for t in decoded] if k == 0 else logs[k]
        window = [(h, t) for h, t in frames if start <= t < stop]
        result.append({"decoded": k == 0, "frames": window})
        await pc.close()
    Path(args.out).write_text(json.dumps(result))


# --- the conductor ------------------------------------------------------------------------


def server_stat(pid: int) -> tuple[float, float, float]:
    """(CPU seconds so far, of which in the kernel, resident MB) of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    user, kernel = int(fields[11]) / tick, int(fields[12]) / tick
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return user + kernel, kernel, rss


async def dropped_packets(url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("avatar_stream_packets_dropped_total{") and 'track="video"' in line
    )


async def keep_speaking(client: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        status, _ = await client.post("/say", {"text": TEXT})
        if status == 202:
            await client.wait_event("speaking_ended", timeout=60)
        else:
            await asyncio.sleep(0.5)


async def level(
    url: str, pid: int, stream: str, count: int, seconds: float, stats: SessionStats
) -> dict[str, Any]:
    start_at = time.monotonic() + SETTLE + count * 0.15
    tmp = Path(tempfile.mkdtemp())
    procs = []
    for p in range(0, count, PER_PROCESS):
        n = min(PER_PROCESS, count - p)
        out = tmp / f"viewers-{p}.json"
        cmd = [sys.executable, __file__, "--viewers", url, stream, str(n), str(start_at)]
        cmd += [str(seconds), str(out)]
        procs.append((subprocess.Popen(cmd), out))
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    dropped0 = await dropped_packets(url)
    cpu0, kernel0, _ = server_stat(pid)
    sent0, missing0 = await stats.video()
    await asyncio.sleep(seconds)
    cpu1, kernel1, rss = server_stat(pid)
    sent1, missing1 = await stats.video()
    dropped1 = await dropped_packets(url)
    viewers: list[dict[str, Any]] = []
    for proc, out in procs:
        proc.wait(timeout=120)
        viewers += json.loads(out.read_text())
    arrivals: dict[str, list[float]] = {}
    for viewer in viewers:
        for digest, t in viewer["frames"]:
            if digest:
                arrivals.setdefault(digest, []).append(t)
    counting = sum(1 for v in viewers if not v["decoded"])
    spreads = [
        max(ts) - min(ts) for ts in arrivals.values() if len(ts) == counting and counting > 1
    ]
    fps = [len(v["frames"]) / seconds for v in viewers]
    return {
        "viewers": count,
        "cpu": 100 * (cpu1 - cpu0) / seconds,
        "kernel": 100 * (kernel1 - kernel0) / seconds,
        "rss": rss,
        "fps_min": min(fps),
        "fps_median": float(np.median(fps)),
        "fresh": ((sent1 - sent0) - (missing1 - missing0)) / seconds,
        "spread_median": 1000 * float(np.median(spreads)) if spreads else float("nan"),
        "spread_p95": 1000 * float(np.percentile(spreads, 95)) if spreads else float("nan"),
        "dropped": dropped1 - dropped0,
    }


class SessionStats:
    """The session's video counters, read from GET /api/sessions/{id}."""

    def __init__(self, url: str, session_id: str) -> None:
        self.url = f"{url}/api/sessions/{session_id}"

    async def video(self) -> tuple[int, int]:
        """(frames sent, slots that repeated the previous picture) so far."""
        async with aiohttp.ClientSession() as http, http.get(self.url) as resp:
            state = await resp.json()
        return state["video"]["sent"], state["video"]["missing"]


async def conduct(levels: list[int], seconds: float) -> list[dict[str, Any]]:
    from rtc.webrtc.ice import use_loopback_ice
    from tests.browser_support import running_server
    from tests.realtime_peer import TestClient

    use_loopback_ice(True)
    cache = Path(tempfile.mkdtemp())
    results = []
    flags = ("--max-viewers-per-stream", str(max(levels)))
    with running_server(cache, *flags) as url:
        pid = next(
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and b"server.py" in (p / "cmdline").read_bytes()
            and url.rsplit(":", 1)[1].encode() in (p / "cmdline").read_bytes()
        )
        client = TestClient(url)
        answer = await client.connect(language="ru")
        stop = asyncio.Event()
        speaker = asyncio.create_task(keep_speaking(client, stop))
        stats = SessionStats(url, answer["session_id"])
        try:
            for count in levels:
                results.append(await level(url, pid, answer["stream"], count, seconds, stats))
                print(json.dumps(results[-1]), flush=True)
                await asyncio.sleep(3)  # the level's viewers leave
        finally:
            stop.set()
            speaker.cancel()
            await client.close()
    return results


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]["cpu"] if results else 1.0
    rows = [
        "| viewers | server CPU (% of a core) | of which kernel | vs 1 viewer "
        "| viewer fps min / median | fresh fps | lag between viewers median / p95 (ms) "
        "| server RSS (MB) | drops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['viewers']} | {r['cpu']:.0f} | {r['kernel']:.0f} | {r['cpu'] / base:.2f}x "
            f"| {r['fps_min']:.1f} / {r['fps_median']:.1f} | {r['fresh']:.1f} "
            f"| {r['spread_median']:.1f} / {r['spread_p95']:.1f} | {r['rss']:.0f} "
            f"| {r['dropped']:.0f} |"
        )
    return "\n".join(rows)


def summary(results: list[dict[str, Any]]) -> str:
    """The figures the targets are about, computed from the table."""
    if len(results) < 2:
        return ""
    first, last = results[0], results[-1]
    per_viewer = (last["cpu"] - first["cpu"]) / max(1, last["viewers"] - first["viewers"])
    ratio = last["cpu"] / first["cpu"]
    slowest = min(r["fps_min"] for r in results)
    return (
        f"{last['viewers']} viewers cost {ratio:.2f}x the server CPU of {first['viewers']} "
        f"(target: at most 1.5x, {'met' if ratio <= 1.5 else 'missed'}); each added viewer "
        f"costs {per_viewer:.2f} % of a core. The slowest viewer received {slowest:.1f} fps "
        f"(target: at least 24, {'met' if slowest >= 24 else 'missed'}). An added viewer "
        "costs its share of the send path (header, SRTP, one sendto per RTP packet: "
        "rtc/webrtc/packet_sender.py), its RTCP, and, on a machine the viewers' processes "
        "share, the server's slowdown while they run (caches, time slices); on loopback the "
        "kernel's receive side is charged to the sender too (the kernel column)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--viewers", nargs=6, metavar=("URL", "STREAM", "N", "AT", "S", "OUT"))
    args = parser.parse_args()
    if args.viewers:
        url, stream, n, at, s, out = args.viewers
        ns = argparse.Namespace(
            url=url, stream=stream, count=int(n), start_at=float(at), seconds=float(s), out=out
        )
        asyncio.run(viewers_main(ns))
        return
    results = asyncio.run(conduct(args.levels, args.seconds))
    command = "python bench/fanout.py " + shlex.join(sys.argv[1:])
    body = "\n".join(
        [
            SECTION,
            "",
            f"`{command.strip()}` on {cpu_model()} ({os.cpu_count()} CPUs, "
            f"{platform.system()}), viseme engine, one speaking session, VP8 viewers "
            f"({PER_PROCESS} per client process, sharing the machine), {args.seconds:g} s "
            "per level.",
            "",
            table(results),
            "",
            summary(results),
            "",
        ]
    )
    print(body)
    if not args.no_docs:
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
