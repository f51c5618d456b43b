"""Fuzzing the HTTP API from its own OpenAPI description (schemathesis), against the real
server process (``python server.py serve``) on 127.0.0.1.

Bounded in count (at most MAX_EXAMPLES requests, fewer for the SDP endpoints, whose valid
bodies would open peer connections) and in time (FUZZ_SECONDS, then the remaining operations
are skipped; every request has a REQUEST_TIMEOUT). A real session, held open by an aiortc
peer on a background loop, receives the fuzzed say/interrupt/state requests, so their bodies
reach the session instead of stopping at a 404. Asserted: no 500, no hang, every error is
JSON ``{"error": ...}``, answers match the description, nothing unhandled reaches the log,
the live session survives, and the server still answers /healthz afterwards.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rtc.webrtc.ice import use_loopback_ice
from tests.server_process import LivePeer, http_get, server_process

pytestmark = [
    pytest.mark.timeout(150),
    # schemathesis' own strategies use `random`; nothing this test can change.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

MAX_EXAMPLES = 150
"""Requests sent at most, over every operation."""
SDP_EXAMPLES = 4
"""Per SDP endpoint: enough for bad-body handling, too few to flood the server with peers."""
FUZZ_SECONDS = 50.0
"""Operations not started by then are skipped (and reported), keeping the test bounded."""
REQUEST_TIMEOUT = 15.0
"""A request without an answer by then counts as a hang."""
MAX_TEXT = 80
"""The fuzzed server's text limit: keeps valid renders short."""
SDP_PATHS = ("/offer", "/api/generate_stream", "/api/generate_stream_nogan", "/whep/{stream}")
DOCUMENTED_5XX = {503, 507}
LIVE_SESSION_OPS = (
    "POST /api/sessions/{session_id}/say",
    "POST /api/sessions/{session_id}/interrupt",
    "GET /api/sessions/{session_id}",
)
"""Sent to the live session (its events stream would never end; DELETE would end it)."""


@schemathesis.serializer("application/sdp", "application/trickle-ice-sdpfrag")
def _sdp_text(_ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """SDP bodies are text: whatever the fuzzer made, as UTF-8."""
    if isinstance(value, bytes):
        return value
    return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8", "replace")


CHECKS: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, avatar_cache: Path, empty_checkpoints: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """The server process on a free loopback port; yields (base URL, process, its log)."""
    log_path = tmp_path_factory.mktemp("fuzz") / "server.log"
    with server_process(
        log_path,
        avatar_cache,
        empty_checkpoints,
        "--max-text",
        str(MAX_TEXT),
        "--max-sessions",
        "2",
    ) as running:
        yield running.base, running.process, running.log_path


def _has_input(operation: schemathesis.APIOperation) -> bool:
    return bool(operation.body) or bool(list(operation.iter_parameters()))


def _negatable(operation: schemathesis.APIOperation) -> bool:
    """Whether invalid input can be made: a body or a constrained query parameter. (A free
    string path parameter cannot be invalid; hypothesis would search seconds to find so.)"""
    return bool(operation.body) or any(p.location == "query" for p in operation.iter_parameters())


def _budget(operations: list[schemathesis.APIOperation]) -> dict[str, int]:
    """Examples per operation path+method: one for those without input (nothing to vary),
    SDP_EXAMPLES for the SDP endpoints, the rest shared by the others."""
    plain = [op for op in operations if not _has_input(op)]
    sdp = [op for op in operations if op.path in SDP_PATHS]
    rest = [op for op in operations if op not in plain and op not in sdp]
    share = (MAX_EXAMPLES - len(plain) - SDP_EXAMPLES * len(sdp)) // max(1, len(rest))
    budget = {op.label: 1 for op in plain} | {op.label: SDP_EXAMPLES for op in sdp}
    return budget | {op.label: max(2, share) for op in rest}


def _check_answer(response: Any, label: str) -> None:
    status = response.status_code
    assert status != 500, f"{label}: 500 {response.text[:300]}"
    assert status < 500 or status in DOCUMENTED_5XX, f"{label}: {status}"
    if status >= 400:
        content_type = response.headers.get("content-type", [""])[0]  # lowercase names
        assert content_type.startswith("application/json"), (label, content_type)
        body = json.loads(response.content)
        assert isinstance(body.get("error"), str) and body["error"], (label, body)


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    examples: int,
    base: str,
    started: float,
    sent: dict[str, int],
    live_session: str,
) -> None:
    """Send up to ``examples`` generated requests of ``operation`` and check each answer."""
    label = operation.label

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        if time.monotonic() - started > FUZZ_SECONDS:
            return
        if label in LIVE_SESSION_OPS:
            case.path_parameters = {"session_id": live_session}
        response = case.call(base_url=base, timeout=REQUEST_TIMEOUT)
        sent[label] = sent.get(label, 0) + 1
        _check_answer(response, label)
        if mode is GenerationMode.POSITIVE:  # invalid input need not match the description
            case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Nothing in the description can be made invalid (e.g. a free-form path parameter):
        # the positive run covers the operation.
        assert mode is GenerationMode.NEGATIVE, label


def test_fuzz_the_api_from_its_openapi_description(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, process, log_path = server
    status, raw = http_get(base + "/api/openapi.json")
    assert status == 200
    spec = json.loads(raw)
    assert spec["components"]["schemas"]["Say"]["properties"]["text"]["maxLength"] == MAX_TEXT
    schema = schemathesis.openapi.from_dict(spec)
    operations: list[schemathesis.APIOperation] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # the description itself is valid
        operations.append(result.ok())
    assert len(operations) >= 15
    budget = _budget(operations)
    assert sum(budget.values()) <= MAX_EXAMPLES
    use_loopback_ice(True)
    peer = LivePeer(base)
    try:
        live_session = peer.start()
        _fuzz_all(operations, budget, base, live_session)
        # The session took every fuzzed say/interrupt and is still there.
        status, raw = http_get(f"{base}/api/sessions/{live_session}")
        assert status == 200 and json.loads(raw)["session_id"] == live_session
    finally:
        peer.stop()
        use_loopback_ice(False)
    # The server survived and stayed healthy.
    assert process.poll() is None
    assert http_get(base + "/healthz")[0] == 200
    log = log_path.read_text(errors="replace")
    assert "unhandled error" not in log, log[log.find("unhandled error") - 200 :][:3000]
    assert "Traceback" not in log, log[log.find("Traceback") :][:3000]


def _fuzz_all(
    operations: list[schemathesis.APIOperation],
    budget: dict[str, int],
    base: str,
    live_session: str,
) -> None:
    """Fuzz every operation within the budget and FUZZ_SECONDS."""
    started = time.monotonic()
    sent: dict[str, int] = {}
    skipped: list[str] = []
    for operation in operations:
        if time.monotonic() - started > FUZZ_SECONDS:
            skipped.append(operation.label)
            continue
        modes = [GenerationMode.POSITIVE]
        if _negatable(operation):  # half the examples break the description on purpose
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            examples = max(1, budget[operation.label] // len(modes))
            _fuzz(operation, mode, examples, base, started, sent, live_session)
    total = sum(sent.values())
    print(
        f"fuzz: {total} requests over {len(sent)} operations in "
        f"{time.monotonic() - started:.1f} s; skipped for time: {skipped or 'none'}; {sent}"
    )
    assert 0 < total <= MAX_EXAMPLES
    assert len(sent) >= len(operations) // 2, (sent, skipped)
    assert all(sent.get(op, 0) > 0 for op in LIVE_SESSION_OPS), sent
