"""What every benchmark shares: naming the machine and writing its section of the docs."""

from __future__ import annotations

import platform
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(section: str, body: str) -> None:
    """Replace the section headed ``section`` in docs/benchmarks.md with ``body`` (or append
    it); every other benchmark's section stays as it is."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    start = text.find(section)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(section))
        rest = "\n" + text[end + 1 :] if end >= 0 else ""
        text = text[:start] + body.rstrip("\n") + "\n" + rest
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text.rstrip("\n") + "\n")
