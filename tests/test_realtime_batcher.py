"""The shared batcher: same pictures as unbatched, fair, deadline-aware, flushable."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from inference.avatar.store import AvatarStore
from inference.engines.base import LipSyncEngine, PendingFrames, create_engine
from inference.frames import AvatarFrame, Box, FacePatch, LipSyncRequest, MouthGeometry, StreamState
from inference.lipsync import build_requests, run_engine
from inference.mel import frame_count, melspectrogram
from inference.mp4 import bgr_to_video_frame
from inference.tts import TextToSpeech
from rtc.live.batcher import Batcher, BatcherClosed, BatcherPool

FAR = 1e12  # a deadline nobody misses


class RecordingEngine(LipSyncEngine):
    """Returns the crop unchanged after ``per_frame`` seconds a frame; records each batch's
    owners (the ``tag`` in the request's stream state) and the calling thread."""

    name = "recording"

    def __init__(self, per_frame: float = 0.0, max_batch: int = 8, fail: bool = False) -> None:
        self.per_frame = per_frame
        self.max_batch = max_batch
        self.fail = fail
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()
        self.gate: threading.Event | None = None
        self.busy = threading.Event()

    def infer(self, requests: Sequence[LipSyncRequest]) -> list[FacePatch]:
        self.threads.add(threading.current_thread().name)
        self.busy.set()
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.per_frame * len(requests))
        if self.fail:
            raise RuntimeError("model exploded")
        self.batches.append([str(r.stream.values["tag"]) if r.stream else "" for r in requests])
        out = []
        for r in requests:
            b = r.frame.box
            out.append(FacePatch(image=r.frame.image[b.y1 : b.y2, b.x1 : b.x2].copy(), box=b))
        return out


FRAME = AvatarFrame(
    image=np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8),
    box=Box(8, 8, 24, 24),
    mouth=MouthGeometry(16, 18, 4, 2, 22),
)


def tagged(tag: str, count: int) -> list[LipSyncRequest]:
    state = StreamState({"tag": tag})
    mel = np.zeros((80, 16), np.float32)
    return [LipSyncRequest(mel=mel, frame=FRAME, silent=False, stream=state) for _ in range(count)]


@pytest.fixture
def speech_requests(
    espeak_tts: TextToSpeech, avatar_store: AvatarStore
) -> list[tuple[list[LipSyncRequest], list[LipSyncRequest]]]:
    """Per session: two identical request lists with separate stream states."""
    pcm = espeak_tts.synthesize("Папа купил большую карту.", "ru").pcm
    mel = melspectrogram(pcm)
    frames = range(frame_count(pcm.size))
    out = []
    for name in ("astronaut", "cartoon", "astronaut"):
        avatar = avatar_store.get(name)
        pair = tuple(
            build_requests(pcm, mel, avatar, frames, 0.004, None, StreamState()) for _ in range(2)
        )
        out.append(pair)
    return out  # type: ignore[return-value]


async def test_batched_equals_unbatched(speech_requests) -> None:
    engine = create_engine("viseme")
    batcher = Batcher(engine, max_batch=16, max_wait=0.005, drop_expired=False)
    try:
        futures = []
        for owner, (requests, _) in enumerate(speech_requests):
            # Sessions interleave in every batch; deadlines follow each session's frames.
            deadlines = [FAR + i * 0.04 for i in range(len(requests))]
            futures.append(batcher.submit(f"s{owner}", requests, deadlines))
        results = [await asyncio.gather(*f) for f in futures]
    finally:
        batcher.close()
    for (_, alone), got in zip(speech_requests, results, strict=True):
        expected = run_engine(engine, alone, feather=True)
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    assert batcher.stats.batches < sum(len(r) for r, _ in speech_requests)  # it did batch


async def test_engine_runs_only_in_the_worker_thread() -> None:
    engine = RecordingEngine()
    batcher = Batcher(engine, max_batch=4, max_wait=0.001)
    try:
        await asyncio.gather(*batcher.submit("a", tagged("a", 10), [FAR] * 10))
    finally:
        batcher.close()
    assert engine.threads == {"batcher-recording"}


async def test_every_session_gets_a_share_of_each_batch() -> None:
    engine = RecordingEngine(per_frame=0.002, max_batch=8)
    batcher = Batcher(engine, max_batch=8, max_wait=0.02)
    try:
        flood = batcher.submit("a", tagged("a", 64), [FAR] * 64)
        small = batcher.submit("b", tagged("b", 4), [FAR] * 4)
        await asyncio.gather(*small)
        batches_for_b = len(engine.batches)
        await asyncio.gather(*flood)
    finally:
        batcher.close()
    # b was served within the first two batches although a flooded the queue first.
    assert batches_for_b <= 2
    assert sum(batch.count("b") for batch in engine.batches[:2]) == 4


async def test_earliest_deadline_first() -> None:
    engine = RecordingEngine(max_batch=2)
    engine.gate = threading.Event()
    batcher = Batcher(engine, max_batch=2, max_wait=0.0)
    try:
        blocker = batcher.submit("a", tagged("block", 1), [FAR])  # holds the worker
        while not engine.busy.is_set():
            await asyncio.sleep(0.001)
        late = batcher.submit("a", tagged("late", 2), [FAR + 10, FAR + 11])
        soon = batcher.submit("a", tagged("soon", 2), [FAR + 1, FAR + 2])
        engine.gate.set()
        await asyncio.gather(*blocker, *late, *soon)
    finally:
        batcher.close()
    assert engine.batches[1] == ["soon", "soon"]


async def test_a_flooding_session_does_not_stall_a_live_one() -> None:
    # 5 ms a frame: the flood alone is 1.5 s of engine work.
    engine = RecordingEngine(per_frame=0.005, max_batch=8)
    batcher = Batcher(engine, max_batch=8, max_wait=0.005)
    loop = asyncio.get_running_loop()
    try:
        flood = batcher.submit("flood", tagged("flood", 300), [loop.time() + 60] * 300)
        lateness = []
        for _ in range(10):  # a live session: one frame every 40 ms, due 200 ms later
            deadline = loop.time() + 0.2
            (future,) = batcher.submit("live", tagged("live", 1), [deadline])
            assert await future is not None
            lateness.append(loop.time() - deadline)
            await asyncio.sleep(0.04)
        assert max(lateness) < 0, lateness
        batcher.flush("flood")
        await asyncio.gather(*flood, return_exceptions=True)
    finally:
        batcher.close()


async def test_flush_drops_only_that_sessions_pending_frames() -> None:
    engine = RecordingEngine(per_frame=0.01, max_batch=2)
    batcher = Batcher(engine, max_batch=2, max_wait=0.0)
    try:
        a = batcher.submit("a", tagged("a", 20), [FAR] * 20)
        b = batcher.submit("b", tagged("b", 4), [FAR] * 4)
        await asyncio.sleep(0.015)  # let a batch start, then interrupt a
        dropped = batcher.flush("a")
        assert dropped >= 16
        await asyncio.gather(*b)
        await asyncio.gather(*a, return_exceptions=True)
    finally:
        batcher.close()
    assert sum(f.cancelled() for f in a) == dropped
    assert all(not f.cancelled() for f in b)
    assert sum(batch.count("a") for batch in engine.batches) == 20 - dropped


async def test_expired_frames_are_not_inferred() -> None:
    engine = RecordingEngine()
    batcher = Batcher(engine, max_batch=4, max_wait=0.0)
    loop = asyncio.get_running_loop()
    try:
        late = batcher.submit("a", tagged("a", 3), [loop.time() - 1.0] * 3)
        assert await asyncio.gather(*late) == [None, None, None]
        (fresh,) = batcher.submit("a", tagged("a", 1), [loop.time() + 5])
        assert await fresh is not None
    finally:
        batcher.close()
    assert batcher.stats.expired == 3
    assert engine.batches == [["a"]]


async def test_engine_error_reaches_the_sessions_and_the_worker_survives() -> None:
    engine = RecordingEngine(fail=True)
    batcher = Batcher(engine, max_batch=4, max_wait=0.0)
    try:
        futures = batcher.submit("a", tagged("a", 2), [FAR] * 2)
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        engine.fail = False
        (result,) = await asyncio.gather(*batcher.submit("a", tagged("a", 1), [FAR]))
        assert result.shape == FRAME.image.shape
    finally:
        batcher.close()


async def test_close_joins_the_worker_and_refuses_new_work() -> None:
    pool = BatcherPool(max_batch=4)
    engine = RecordingEngine()
    batcher = pool.get(engine)
    assert pool.get(engine) is batcher
    await asyncio.gather(*batcher.submit("a", tagged("a", 2), [FAR] * 2))
    pending = batcher.submit("a", tagged("a", 1), [FAR + 5])
    before = {t.name for t in threading.enumerate()}
    assert "batcher-recording" in before
    pool.close()
    await asyncio.gather(*pending, return_exceptions=True)
    assert "batcher-recording" not in {t.name for t in threading.enumerate()}
    with pytest.raises(BatcherClosed):
        batcher.submit("a", tagged("a", 1), [FAR])


async def test_empty_submit() -> None:
    batcher = Batcher(RecordingEngine())
    assert batcher.submit("a", [], []) == []
    batcher.close()


class FinishingEngine(RecordingEngine):
    """Finishes frames itself (here with the base class's host compositor) and counts how
    many frames went each way."""

    finishes_frames = True

    def __init__(self) -> None:
        super().__init__(max_batch=8)
        self.finished = 0

    def infer_i420(self, requests: Sequence[LipSyncRequest], feather: bool = True) -> list:
        self.finished += len(requests)
        return super().infer_i420(requests, feather)


async def test_an_engine_that_finishes_frames_gets_the_video_frames() -> None:
    engine = FinishingEngine()
    batcher = Batcher(engine, max_batch=8, max_wait=0.05)
    try:
        video = batcher.submit("a", tagged("a", 3), [FAR] * 3, finish=bgr_to_video_frame)
        bgr = batcher.submit("b", tagged("b", 2), [FAR] * 2)
        dissolve = batcher.submit("c", tagged("c", 1), [FAR], finish=lambda image: image.sum())
        frames = await asyncio.gather(*video)
        images = await asyncio.gather(*bgr)
        (total,) = await asyncio.gather(*dissolve)
    finally:
        batcher.close()
    assert engine.finished == 3  # only the frames whose finish has an I420 twin
    assert sum(len(b) for b in engine.batches) == 3 + 3  # infer_i420 runs infer here too
    want = bgr_to_video_frame(FRAME.image).to_ndarray()  # the recording engine pastes the crop
    for frame in frames:
        np.testing.assert_array_equal(frame.to_ndarray(), want)
    for image in images:
        np.testing.assert_array_equal(image, FRAME.image)
    assert total == FRAME.image.sum()


class GatedFrames(PendingFrames):
    """Frames that a test releases: a device still running until ``gate`` is set."""

    def __init__(self, frames: list[np.ndarray], gate: threading.Event, log: list[str]) -> None:
        self._frames, self._gate, self._log = frames, gate, log

    def ready(self) -> bool:
        return self._gate.is_set()

    def result(self) -> list[np.ndarray]:
        self._gate.wait(5)
        self._log.append("result")
        if not self._frames:
            raise RuntimeError("device fault")
        return self._frames


class AsyncEngine(FinishingEngine):
    """Returns from ``submit_i420`` before its frames are done (like Wav2Lip on CUDA); a
    batch holding a frame tagged ``bad`` fails when its result is waited for."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []
        self.release = threading.Event()

    def submit_i420(self, requests: Sequence[LipSyncRequest], feather: bool = True):
        self.log.append("submit")
        frames = self.infer_i420(requests, feather)
        if any(r.stream and r.stream.values["tag"] == "bad" for r in requests):
            frames = []
        return GatedFrames(frames, self.release, self.log)


async def until(condition, seconds: float = 5.0) -> bool:
    """Poll ``condition`` at most ``seconds`` (bounded, like every loop in these tests)."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def test_the_next_batch_is_launched_while_one_is_on_the_device() -> None:
    engine = AsyncEngine()
    batcher = Batcher(engine, max_batch=2, max_wait=0.001)
    try:
        first = batcher.submit("a", tagged("a", 2), [FAR, FAR], finish=bgr_to_video_frame)
        second = batcher.submit("b", tagged("b", 2), [FAR + 1] * 2, finish=bgr_to_video_frame)
        # Nothing has come back from the device, yet the second batch is queued behind the first.
        launched_both = await until(lambda: engine.log.count("submit") == 2)
        assert launched_both, engine.log
        assert "result" not in engine.log
        assert not any(f.done() for f in first + second)
        engine.release.set()
        frames = await asyncio.wait_for(asyncio.gather(*first, *second), 5)
    finally:
        batcher.close()
    assert engine.log == ["submit", "submit", "result", "result"]
    want = bgr_to_video_frame(FRAME.image).to_ndarray()
    for frame in frames:
        np.testing.assert_array_equal(frame.to_ndarray(), want)
    assert batcher.stats.batches == 2 and batcher.stats.frames == 4


async def test_a_device_fault_reaches_only_its_batch() -> None:
    engine = AsyncEngine()
    engine.release.set()
    batcher = Batcher(engine, max_batch=2, max_wait=0.001)
    try:
        bad = batcher.submit("x", tagged("bad", 2), [FAR, FAR], finish=bgr_to_video_frame)
        outcome = await asyncio.wait_for(asyncio.gather(*bad, return_exceptions=True), 5)
        good = batcher.submit("y", tagged("y", 2), [FAR, FAR], finish=bgr_to_video_frame)
        frames = await asyncio.wait_for(asyncio.gather(*good), 5)
    finally:
        batcher.close()
    assert all(isinstance(e, RuntimeError) and "device fault" in str(e) for e in outcome)
    assert len(frames) == 2 and batcher.stats.batches == 1
