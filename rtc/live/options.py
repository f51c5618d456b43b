"""What a live pipeline is told (its options) and what it counts (its stats)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipelineOptions:
    """Tuning of one session's producer (defaults suit 25 fps on a small CPU)."""

    max_ahead: int = 8
    """Speech frames scheduled ahead of the clock at most (320 ms): bounds every queue."""
    chunk: int = 4
    """Speech frames submitted to the batcher together (bigger batches run faster)."""
    idle_lead: int = 1
    """Idle frames are placed this many slots ahead (the producer runs every slot, so one
    is enough), so speech can start right after them."""
    mic_jitter: float = 0.02
    """Extra seconds of delay for microphone frames, absorbing their arrival jitter (they
    come in 20 ms packets)."""
    mic_backlog: int = 8
    """Microphone frames waiting to be scheduled at most; older ones are dropped."""
    echo_mic: bool = False
    """Send the caller's voice back with the face (a presenter wants it, a caller does not)."""
    silence_rms: float = 0.004
    """Windows quieter than this count as silence."""
    margin: float = 0.02
    """Seconds added to the batcher's latency when choosing where speech starts."""
    max_utterances: int = 16
    """Utterances queued or speaking at most; more ``say`` calls raise QueueFull (429)."""
    idle_motion: bool = True
    """A still photo's head sways and breathes (inference/avatar/sway.py) in every frame."""
    motion_seed: int | None = None
    """The motion's seed; None: derived from the session id (each session its own motion)."""


@dataclass
class PipelineStats:
    """Counters of one session."""

    speech_frames: int = 0
    mic_frames: int = 0
    idle_frames: int = 0
    expired: int = 0
    """Frames the batcher dropped because they would have been late."""
    mic_dropped: int = 0
    late: int = 0
    """Pictures that came back from the batcher after their slot had been released."""
    first_frame_latency: float | None = None
    """Seconds from the last ``say`` to the release of its first frame."""
    mic_latency: float | None = None
    """Smoothed seconds from a microphone frame's arrival to the release of its picture."""
    utterances: int = 0
    errors: list[str] = field(default_factory=list)
