"""Threads under reconnects: a storm of sessions that open, stream and vanish ends with the
server's thread count where it was after the first round, not growing with every session.

Before the fix each closed session left its Opus encoder (and the microphone resampler)
alive until a full garbage collection, and with them an FFmpeg filter graph's worker per
CPU: 30-cycle rounds took the server from 26 to 36, 46 and 64 threads. Bounded: 90 cycles,
each with a time limit; the server is its own process on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtc.webrtc.ice import use_loopback_ice
from tests.realtime_peer import TestClient
from tests.server_process import ServerProcess, http_get, server_process

pytestmark = pytest.mark.timeout(280)

FIRST_ROUND = 30
MORE = 60
SETTLE_SECONDS = 10.0
"""How long the server may take to close a vanished session."""
SLACK = 4
"""Threads the count may differ by (a pool worker started or retired meanwhile)."""


@pytest.fixture(scope="module")
def storm_server(
    tmp_path_factory: pytest.TempPathFactory, avatar_cache: Path, empty_checkpoints: Path
) -> Iterator[ServerProcess]:
    log_path = tmp_path_factory.mktemp("threads") / "server.log"
    with server_process(log_path, avatar_cache, empty_checkpoints, "--max-sessions", "2") as server:
        yield server


def os_threads(server: ServerProcess) -> list[str]:
    """The server's threads by their OS names."""
    names = []
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # ended while listed
            continue
    return names


async def vanish_cycle(base: str) -> str:
    """Open a session, take a few frames, then go away without a DELETE."""
    client = TestClient(base)
    try:
        await asyncio.wait_for(client.connect(), 20)
        await client.wait_for_frames(2)
    finally:
        await client.close(delete=False)
    assert client.session_id is not None
    return client.session_id


async def until_closed(base: str, session_id: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while http_get(f"{base}/api/sessions/{session_id}")[0] != 404:
        assert time.monotonic() < deadline, f"session {session_id} outlived its peer"
        await asyncio.sleep(0.05)


async def storm(base: str, cycles: int) -> None:
    for _ in range(cycles):
        await until_closed(base, await vanish_cycle(base))


async def test_reconnect_storm_does_not_pile_up_threads(storm_server: ServerProcess) -> None:
    use_loopback_ice(True)
    try:
        await storm(storm_server.base, FIRST_ROUND)
        await asyncio.sleep(1.0)
        after_first = os_threads(storm_server)
        await storm(storm_server.base, MORE)
        await asyncio.sleep(1.0)
        after_all = os_threads(storm_server)
    finally:
        use_loopback_ice(False)
    assert storm_server.alive()
    assert len(after_all) <= len(after_first) + SLACK, (after_first, after_all)
    # The server's own threads say what they are, to the OS too.
    assert any(name.startswith(("avatar-io", "batcher", "encode")) for name in after_all), after_all
    status, raw = http_get(storm_server.base + "/metrics")
    assert status == 200
    reported = next(
        line for line in raw.decode().splitlines() if line.startswith("avatar_os_threads ")
    )
    assert float(reported.split()[-1]) >= len(after_all) - SLACK
    log = storm_server.log()
    assert "Task exception was never retrieved" not in log, log[-3000:]
    assert "Traceback" not in log, log[log.find("Traceback") :][:3000]
