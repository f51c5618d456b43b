"""ICE settings for aiortc peers: servers from the configuration, optional loopback gathering.

aiortc contacts a public STUN server unless it is given an explicit (possibly empty) server
list, so every peer connection is built from :func:`rtc_configuration`. aioice leaves
127.0.0.1 out when it gathers host candidates, so two peers on a loopback-only machine never
connect; :func:`use_loopback_ice` replaces aioice's host-address function so that only
127.0.0.1 is offered (local use and tests: nothing is sent to any other address).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from urllib.parse import unquote

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

log = logging.getLogger(__name__)

_ORIGINAL_HOST_ADDRESSES: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Only the IPv4 loopback address (IPv6 ::1 is not needed by any peer we talk to)."""
    return ["127.0.0.1"] if use_ipv4 else []


def use_loopback_ice(enabled: bool = True) -> None:
    """Make every peer of this process gather only 127.0.0.1 (or restore the default).

    aioice looks the function up at gathering time, so this affects connections created
    afterwards and is process-wide: a server started with ``--ice-loopback`` serves local
    browsers only.
    """
    replacement = _loopback_addresses if enabled else _ORIGINAL_HOST_ADDRESSES
    aioice.ice.get_host_addresses = replacement  # type: ignore[assignment]
    log.info("ICE host candidates: %s", "127.0.0.1 only" if enabled else "all interfaces")


def parse_ice_server(url: str) -> RTCIceServer:
    """One ``--ice-server`` value as an RTCIceServer.

    TURN credentials may be written into the URL as ``turn:USER:PASSWORD@host:3478`` (the
    only place a command line can carry them); STUN URLs are used as they are.
    """
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns"):
        raise ValueError(f"ICE server {url!r} must start with stun:, stuns:, turn: or turns:")
    if "@" in rest and scheme.startswith("turn"):
        creds, _, host = rest.rpartition("@")
        user, _, password = creds.partition(":")
        return RTCIceServer(
            urls=f"{scheme}:{host}", username=unquote(user), credential=unquote(password)
        )
    return RTCIceServer(urls=url)


def rtc_configuration(ice_servers: Sequence[str]) -> RTCConfiguration:
    """Peer configuration with exactly ``ice_servers`` (none: no STUN/TURN traffic at all)."""
    return RTCConfiguration(iceServers=[parse_ice_server(u) for u in ice_servers])
