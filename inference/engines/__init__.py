"""Lip-sync engines behind one seam; see :mod:`inference.engines.base`."""

from inference.engines.base import (
    EngineUnavailable,
    LipSyncEngine,
    available_engines,
    create_engine,
    register_engine,
)

__all__ = [
    "EngineUnavailable",
    "LipSyncEngine",
    "available_engines",
    "create_engine",
    "register_engine",
]
