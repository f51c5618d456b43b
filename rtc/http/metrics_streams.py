"""The live streams' families for /metrics: viewers, shared encoders, forced keyframes, and
what each receiver lost (rtc/webrtc/fanout.py). Read at scrape time from the streams' own
counters; nothing is counted twice."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rtc.outputs.streams import StreamRegistry


def stream_families(streams: StreamRegistry) -> Iterator[Metric]:
    """One sample per stream (and per receiver or codec where labelled)."""
    viewers = GaugeMetricFamily(
        "avatar_stream_viewers",
        "WHEP/OBS viewers of a live stream (limit: max_viewers_per_stream)",
        labels=["stream"],
    )
    encoders = GaugeMetricFamily(
        "avatar_stream_encoders",
        "video encoders a stream runs (one per codec its receivers use, at most two)",
        labels=["stream"],
    )
    forced = CounterMetricFamily(
        "avatar_stream_forced_keyframes",
        "keyframes forced for joiners and lossy receivers (coalesced: --keyframe-gap)",
        labels=["stream", "codec"],
    )
    dropped = CounterMetricFamily(
        "avatar_stream_packets_dropped",
        "packets a receiver never got because it lagged (video: whole GOPs)",
        labels=["stream", "receiver", "track"],
    )
    below = GaugeMetricFamily(
        "avatar_stream_receivers_below_floor",
        "receivers estimating less bandwidth than --min-video-bitrate (not followed)",
        labels=["stream"],
    )
    publications = GaugeMetricFamily(
        "avatar_publications",
        "publications of a stream into Janus, by state (connecting, live, retrying, failed)",
        labels=["stream", "state"],
    )
    retries = CounterMetricFamily(
        "avatar_publication_retries",
        "times a publication lost Janus (down, restarted, room gone, ICE) and reconnected",
        labels=["stream", "publication"],
    )
    for name, stream in streams.streams.items():
        states: dict[str, int] = {}
        for publication in stream.publications.values():
            states[publication.state] = states.get(publication.state, 0) + 1
            retries.add_metric([name, publication.id], publication.retries)
        for state, count in sorted(states.items()):
            publications.add_metric([name, state], count)
        viewers.add_metric([name], len(stream.viewers))
        media = stream.media
        encoders.add_metric([name], len(media.groups))
        for group in media.groups.values():
            forced.add_metric([name, group.mime_type], group.forced_keyframes)
        receivers = media.receivers()
        for receiver in receivers:
            dropped.add_metric([name, receiver.name, receiver.kind], receiver.dropped)
        below.add_metric([name], sum(1 for r in receivers if r.below_floor))
    yield from (viewers, encoders, forced, dropped, below, publications, retries)
