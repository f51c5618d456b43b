"""The client processes of bench/gpu_live.py: a few live sessions each, speaking on a signal.

    python bench/gpu_live_clients.py URL COUNT X1,Y1,X2,Y2 READY GO OUT [--codec video/H264]

Each process opens COUNT sessions (tests/realtime_peer.py's TestClient: a browser-like aiortc
peer that decodes what it receives), waits until video flows in all of them, writes READY
(the seconds connecting took), then waits for the conductor to write GO (a time.monotonic
instant: one clock for every process on the machine), and at that instant every session
says bench/realtime.py's TEXT. Per session it writes to OUT (JSON): bench/realtime.py's
figures (fresh fps, lip-sync lag and correlation, the pipeline's counters), the server's
text -> first frame latency (its ``speaking_started`` event) and the end-to-end one (the
POST until the first changed mouth frame arrives). A failure writes ``{"error": ...}``.
Every wait is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # allow `python bench/gpu_live_clients.py` from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CHANGED = 2.0
"""Mean grey-level change of the mouth box from the last idle frame that counts as the first
lip-synced frame (bench/realtime.py's text_latency uses the same)."""
POLL = 0.02


def first_changed(
    times: Sequence[float], mouths: Sequence[np.ndarray], start: int, reference: np.ndarray
) -> float | None:
    """Arrival time of the first frame from index ``start`` whose mouth box differs from
    ``reference`` by more than CHANGED grey levels on average (None: none did)."""
    for i in range(start, len(mouths)):
        if np.abs(mouths[i].astype(np.float32) - reference).mean() > CHANGED:
            return times[i]
    return None


async def wait_for_go(go: Path, timeout: float) -> float:
    """The instant the conductor wrote into ``go`` (waits for the file, at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not go.exists() or not go.read_text().strip():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go signal in {timeout:.0f} s")
        await asyncio.sleep(POLL)
    return float(go.read_text())


async def say(client: Any, text: str) -> float:
    """POST say; returns when it was sent (time.monotonic)."""
    sent = time.monotonic()
    status, body = await client.post("/say", {"text": text})
    if status != 202:
        raise RuntimeError(f"say answered {status}: {body}")
    return sent


async def speak_once(clients: list[Any], text: str, timeout: float) -> list[dict[str, Any]]:
    """Every client says ``text`` now; per client its figures once speech has ended."""
    from bench.realtime import session_metrics

    before = await asyncio.gather(*(c.state() for c in clients))
    marks = [(len(c.received.mouth), c.received.mouth[-1].astype(np.float32)) for c in clients]
    sent = await asyncio.gather(*(say(c, text) for c in clients))
    started = await asyncio.gather(*(c.wait_event("speaking_started", timeout) for c in clients))
    await asyncio.gather(*(c.wait_event("speaking_ended", timeout) for c in clients))
    after = await asyncio.gather(*(c.state() for c in clients))
    # the last frames of speech are still on their way
    await asyncio.gather(
        *(c.wait_for_frames(len(c.received.video_times) + 10, timeout) for c in clients)
    )
    out = []
    for client, b, a, t0, event, (count, reference) in zip(
        clients, before, after, sent, started, marks, strict=True
    ):
        received = client.received
        arrived = first_changed(received.video_times, received.mouth, count, reference)
        figures = session_metrics(client, b, a)
        figures["server_ms"] = float(event["latency_ms"])
        figures["e2e_ms"] = float("nan") if arrived is None else (arrived - t0) * 1000
        out.append(figures)
    return out


async def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    from bench.realtime import TEXT
    from inference.frames import Box
    from rtc.webrtc.ice import use_loopback_ice
    from tests.realtime_peer import TestClient

    use_loopback_ice(True)
    box = Box(*(int(v) for v in args.box.split(",")))
    clients = [
        TestClient(args.url, mouth_box=box, video_codec=args.codec) for _ in range(args.count)
    ]
    try:
        began = time.monotonic()
        await asyncio.gather(*(c.connect(avatar="astronaut", language="ru") for c in clients))
        await asyncio.gather(*(c.wait_for_frames(10, args.timeout) for c in clients))
        connect_s = time.monotonic() - began
        Path(args.ready).write_text(f"{connect_s:.3f}")
        start_at = await wait_for_go(Path(args.go), args.timeout)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        sessions = await speak_once(clients, TEXT, args.timeout)
        return {"connect_s": connect_s, "sessions": sessions}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("box", help="the mouth box the clients watch: x1,y1,x2,y2")
    parser.add_argument("ready", help="file written once every session shows video")
    parser.add_argument("go", help="file the conductor writes the start instant into")
    parser.add_argument("out", help="JSON results")
    parser.add_argument("--codec", default=None, help="video codec offered first")
    parser.add_argument("--timeout", type=float, default=60.0, help="bound of every wait")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        result = asyncio.run(run_clients(args))
    except Exception as e:  # the conductor reports it as the level's failure
        Path(args.out).write_text(json.dumps({"error": f"{type(e).__name__}: {e}"[:300]}))
        return 1
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
