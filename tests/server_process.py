"""The real server in its own process (``python server.py serve``) on a free loopback port,
and a realtime session held open against it: shared by the fuzz and hostile-input tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config import PROJECT_ROOT
from tests.realtime_peer import TestClient

START_SECONDS = 60.0
"""The server must answer /healthz within this."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url`` (only ever 127.0.0.1); (status, body), error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


@dataclass
class ServerProcess:
    """A running server: its base URL, process and log file."""

    base: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def server_process(
    log_path: Path,
    avatar_cache: Path,
    checkpoints: Path | None,
    *extra: str,
    start_seconds: float = START_SECONDS,
    loopback_ice: bool = True,
) -> Iterator[ServerProcess]:
    """Start the server with loopback ICE (unless ``loopback_ice`` is False: inside a test's
    own network namespace) and ``extra`` flags (``checkpoints``: the Wav2Lip weights'
    folder, None for the default one); stop it afterwards."""
    port = free_port()
    weights = [] if checkpoints is None else ["--checkpoints", str(checkpoints)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                str(PROJECT_ROOT / "server.py"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--cache",
                str(avatar_cache),
                # Avatars uploaded by a test (the fuzzer too) stay out of the repository.
                "--avatar-uploads",
                str(avatar_cache / "uploaded-avatars"),
                *weights,
                *(["--ice-loopback"] if loopback_ice else []),
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            assert server.alive(), server.log()[-3000:]
            try:
                if http_get(server.base + "/healthz", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the server did not start in {start_seconds} s"
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class LivePeer:
    """A realtime session kept open by an aiortc peer on a background event loop."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-peer", daemon=True)
        self.client: TestClient | None = None

    def start(self) -> str:
        """Connect; returns the session id once video flows."""
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._connect(), self.loop).result(30)

    @property
    def stream(self) -> str:
        assert self.client is not None and self.client.stream is not None
        return self.client.stream

    async def _connect(self) -> str:
        self.client = TestClient(self.base)
        await self.client.connect()
        await self.client.wait_for_frames(2)
        assert self.client.session_id is not None
        return self.client.session_id

    def stop(self, delete: bool = True) -> None:
        """Delete the session (unless ``delete`` is False: the server is gone) and close the
        peer and the loop."""
        if self.client is not None:
            asyncio.run_coroutine_threadsafe(self.client.close(delete=delete), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
