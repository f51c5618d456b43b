"""The layout's rules, checked on the source (docs/architecture.md explains the rooms):

- ``rtc/live`` (pipeline, speech, batcher, clock, events, queues) imports neither aiohttp nor
  aiortc, nor the rooms that do: it runs the same under WebRTC, a virtual camera or a test;
- ``inference`` never imports ``rtc``: the engines and the front end know no server;
- no engine imports asyncio: engines are called in a worker thread, never on the loop;
- no import cycle between the project's modules, type-only imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

from config import PROJECT_ROOT

PACKAGES = ("rtc", "inference")
TOP_MODULES = ("server", "config")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {name: PROJECT_ROOT / f"{name}.py" for name in TOP_MODULES}
    for package in PACKAGES:
        for path in (PROJECT_ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (TYPE_CHECKING blocks and
    function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_live_room_knows_no_http_or_webrtc() -> None:
    for name, path in project_modules().items():
        if not name.startswith("rtc.live"):
            continue
        for imported in imports_of(path):
            root = imported.split(".")[0]
            assert root not in ("aiohttp", "aiortc"), (name, imported)
            assert not imported.startswith(("rtc.http", "rtc.webrtc", "rtc.outputs")), (
                name,
                imported,
            )


def test_inference_never_imports_rtc_and_engines_never_asyncio() -> None:
    for name, path in project_modules().items():
        imported = imports_of(path)
        if name.startswith("inference"):
            assert not any(i == "rtc" or i.startswith("rtc.") for i in imported), name
        if name.startswith("inference.engines"):
            assert "asyncio" not in {i.split(".")[0] for i in imported}, name


def test_no_import_cycles() -> None:
    modules = project_modules()
    graph = {
        name: {i for i in imports_of(path) if i in modules and i != name}
        for name, path in modules.items()
    }
    # A package's __init__ is not an edge to its members (they import it implicitly).
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


MAX_LINES = 400
"""Past this a module does two things (house style: about 400 lines is a smell)."""


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: count
        for name, path in project_modules().items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_rtc_top_level_is_the_rooms_and_the_wiring() -> None:
    rtc = PROJECT_ROOT / "rtc"
    modules = sorted(p.name for p in rtc.glob("*.py"))
    rooms = sorted(p.name for p in rtc.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert modules == ["__init__.py", "services.py"]
    assert rooms == ["http", "live", "outputs", "webrtc"]
