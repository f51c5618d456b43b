"""Static int8 quantization of the Wav2Lip generator with OpenVINO alone (no NNCF).

OpenVINO runs a convolution in int8 when its inputs pass through ``FakeQuantize`` nodes: its
low-precision transformations turn the pair into u8/i8 kernels. So quantizing is (1) measure
the range of every convolution's input activation on representative data, (2) put a
``FakeQuantize`` with that range before each activation input (256 levels) and a symmetric
per-output-channel one (255 levels) before each weight input.

CPUs without VNNI (AVX2 or AVX-512 alone: many AMD EPYCs, older Xeons) multiply u8 by i8 with
``vpmaddubsw``, which sums each pair of products into int16 with saturation: full 8-bit
weights overflow it (measured here on an AVX2 EPYC: max error 0.55, mean 0.047 on [0, 1]
against fp32, where a VNNI Xeon gave under 0.4 / 0.03). There the weights get 7 bits (their
grid step doubled, still a 255-level node so OpenVINO keeps the int8 kernels): 255 * 63 * 2
fits in int16. This is what NNCF calls its overflow fix.

Ranges come from :func:`calibrate` (real avatar crops and speech, saved as JSON next to the
checkpoint) or, failing that, from :func:`synthetic_batches` (drawn faces, speech-like mels),
which is worse: the engine logs a warning then.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import openvino as ov

    from inference.engines.wav2lip_model import Wav2Lip

log = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray]
"""(mel (B, 1, 80, 16) float32, face (B, 6, 96, 96) float32), the generator's inputs."""
Ranges = dict[str, tuple[float, float]]
"""Activation range per convolution, keyed by :func:`conv_keys`."""

_CONV_TYPES = ("Convolution", "ConvolutionBackpropData")
RANGES_SUFFIX = ".int8.json"
_FORMAT = 1
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def int8_dot_saturates(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU's u8 x i8 dot products saturate at int16 (no VNNI or AMX): then
    :func:`quantize` gives weights 7 bits. True where the flags cannot be read (the safe
    choice: 7-bit weights cost a little precision, saturation costs whole pixels)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return True
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return not any(flag in flags.split() for flag in _VNNI_FLAGS)


def ranges_path_for(checkpoint: Path) -> Path:
    """Where :func:`calibrate` stores the ranges of ``checkpoint`` by default."""
    return checkpoint.with_name(checkpoint.name + RANGES_SUFFIX)


def synthetic_batches(n_batches: int = 4, batch: int = 8, seed: int = 0) -> list[Batch]:
    """Inputs that roughly look like the real ones: drawn faces and speech-like mel windows.

    Faces: a skin-toned ellipse with eyes, brows and a mouth on a varied background, under
    random brightness, with the same crop as reference (the lower half masked in the target,
    as the engine does). Mels: low-energy background with a few formant-like bands.
    """
    import cv2

    rng = np.random.default_rng(seed)
    out: list[Batch] = []
    size = 96
    for _ in range(n_batches):
        faces = np.empty((batch, 6, size, size), np.float32)
        mels = np.empty((batch, 1, 80, 16), np.float32)
        for i in range(batch):
            img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
            skin = (rng.uniform(60, 200), rng.uniform(90, 210), rng.uniform(130, 240))  # BGR
            cv2.ellipse(img, (48, 50), (36, 46), 0, 0, 360, skin, -1)
            for x in (33, 63):
                cv2.circle(img, (x, 38), 5, (40, 40, 40), -1)
                cv2.line(img, (x - 8, 28), (x + 8, 28), (30, 30, 50), 2)
            opening = int(rng.integers(1, 12))
            cv2.ellipse(img, (48, 72), (14, opening), 0, 0, 360, (60, 50, 150), -1)
            img = np.clip(img * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8)
            crop = img.transpose(2, 0, 1).astype(np.float32) / 255.0
            faces[i, :3] = crop
            faces[i, :3, size // 2 :] = 0.0
            faces[i, 3:] = crop
            mel = rng.normal(-2.5, 0.6, (80, 16))
            for _band in range(int(rng.integers(2, 6))):
                centre = rng.uniform(0, 80)
                level = rng.uniform(1.5, 5.0)
                mel += level * np.exp(-0.5 * ((np.arange(80)[:, None] - centre) / 4.0) ** 2)
            mels[i, 0] = np.clip(mel, -4.0, 4.0)
        out.append((mels, faces))
    return out


def convert(model: Wav2Lip) -> ov.Model:
    """Convert the torch generator to an OpenVINO model with a dynamic batch dimension."""
    import openvino as ov
    import torch

    example = (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
    shapes = [ov.PartialShape([-1, 1, 80, 16]), ov.PartialShape([-1, 6, 96, 96])]
    with torch.inference_mode(), warnings.catch_warnings():
        # convert_model traces with torch.jit, which recent torch flags as deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ov.convert_model(model, example_input=example, input=shapes)


def _convs(model: ov.Model) -> list[ov.Node]:
    return [op for op in model.get_ordered_ops() if op.get_type_name() in _CONV_TYPES]


def conv_keys(model: ov.Model) -> list[str]:
    """One key per convolution: position, kind and weight shape. Names of OpenVINO nodes
    change between versions; this does not, and a mismatch shows the ranges are stale."""
    keys = []
    for i, op in enumerate(_convs(model)):
        shape = "x".join(str(d) for d in op.input(1).get_partial_shape().to_shape())
        keys.append(f"{i}:{op.get_type_name()}:{shape}")
    return keys


def collect_ranges(model: ov.Model, batches: Iterable[Batch]) -> Ranges:
    """Run ``batches`` through ``model`` in f32 and record each conv input's min and max."""
    import openvino as ov

    probe = model.clone()
    convs = _convs(probe)
    probe.add_outputs([op.input(0).get_source_output() for op in convs])
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    lo = np.full(len(convs), np.inf)
    hi = np.full(len(convs), -np.inf)
    seen = 0
    for mel, face in batches:
        result = compiled([mel, face])
        for i in range(len(convs)):
            value = result[compiled.outputs[i + 1]]
            lo[i] = min(lo[i], float(value.min()))
            hi[i] = max(hi[i], float(value.max()))
        seen += len(mel)
    if not seen:
        raise ValueError("calibration needs at least one batch")
    log.info("int8 calibration: activation ranges from %d samples", seen)
    return {k: (float(a), float(b)) for k, a, b in zip(conv_keys(model), lo, hi, strict=True)}


def quantize(model: ov.Model, ranges: Ranges, weight_bits: int | None = None) -> ov.Model:
    """Return a copy of ``model`` with FakeQuantize nodes on every conv's inputs; weights
    on ``weight_bits`` (8, or 7 where :func:`int8_dot_saturates`: the default)."""
    import openvino.opset13 as ops

    if weight_bits is None:
        weight_bits = 7 if int8_dot_saturates() else 8
    # A 255-level grid over +-amax * widen has step amax / (2 ** (bits - 1) - 1).
    widen = np.float32(127 / (2 ** (weight_bits - 1) - 1))

    keys = conv_keys(model)
    if set(keys) != set(ranges):
        raise ValueError("int8 ranges do not match this model; recalibrate")
    q = model.clone()
    inserted: dict[tuple[str, int], object] = {}
    for key, conv in zip(keys, _convs(q), strict=True):
        src = conv.input(0).get_source_output()
        src_id = (src.get_node().get_friendly_name(), src.get_index())
        if src_id not in inserted:
            lo, hi = ranges[key]
            if lo >= 0.0:  # after a ReLU: unsigned, the whole 0..255 grid above zero
                lo = 0.0
            else:  # the mel input: symmetric signed
                lo, hi = -max(-lo, hi), max(-lo, hi)
            hi = max(hi, lo + 1e-6)
            low, high = ops.constant(np.float32(lo)), ops.constant(np.float32(hi))
            inserted[src_id] = ops.fake_quantize(src, low, high, low, high, 256)
        conv.input(0).replace_source_output(inserted[src_id].output(0))  # type: ignore[attr-defined]
        weight = conv.input(1).get_source_output()
        values = weight.get_node().get_data()
        # Per output channel: axis 0 for Convolution, axis 1 for ConvolutionBackpropData.
        axis = 0 if conv.get_type_name() == "Convolution" else 1
        amax = np.abs(np.moveaxis(values, axis, 0)).reshape(values.shape[axis], -1).max(axis=1)
        shape = [1] * values.ndim
        shape[axis] = -1
        amax = (np.maximum(amax, 1e-8) * widen).astype(np.float32).reshape(shape)
        wl, wh = ops.constant(-amax), ops.constant(amax)
        fq = ops.fake_quantize(weight, wl, wh, wl, wh, 255)
        conv.input(1).replace_source_output(fq.output(0))
    q.validate_nodes_and_infer_types()
    return q


def ranges_for(model: ov.Model, path: Path | None) -> Ranges:
    """Ranges for ``model``: from ``path`` when it exists and fits, else synthetic (warned)."""
    if path is not None and path.is_file():
        ranges = load_ranges(path)
        if set(ranges) == set(conv_keys(model)):
            log.info("int8 ranges from %s", path)
            return ranges
        log.warning("int8 ranges in %s do not fit this model; recalibrating", path)
    log.warning(
        "openvino-int8: no calibration file; calibrating on synthetic faces and mels, quality "
        "may suffer (calibrate on your avatars, see docs/engines.md)"
    )
    return collect_ranges(model, synthetic_batches())


def save_ranges(ranges: Ranges, path: Path) -> None:
    """Write ranges as JSON (small, human-readable, no pickle)."""
    payload = {"format": _FORMAT, "ranges": {k: list(v) for k, v in ranges.items()}}
    path.write_text(json.dumps(payload, indent=1))


def load_ranges(path: Path) -> Ranges:
    """Read ranges written by :func:`save_ranges`; ValueError if the file is not one."""
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != _FORMAT:
            raise ValueError(f"unknown format {payload.get('format')!r}")
        return {str(k): (float(v[0]), float(v[1])) for k, v in payload["ranges"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path} is not an int8 ranges file: {e}") from e


def calibrate(
    checkpoint: Path,
    batches: Sequence[Batch] | None = None,
    output: Path | None = None,
) -> Path:
    """Measure int8 activation ranges of ``checkpoint`` on ``batches`` and save them.

    Pass batches built from the avatars and voices you will use (the engine's own
    pre-processing); None uses :func:`synthetic_batches`. Returns the JSON file written
    (by default ``<checkpoint>.int8.json``, which the ``openvino-int8`` backend picks up).
    """
    from inference.engines.wav2lip_loader import load_wav2lip

    model = load_wav2lip(checkpoint)
    ranges = collect_ranges(convert(model), batches if batches is not None else synthetic_batches())
    target = output or ranges_path_for(checkpoint)
    save_ranges(ranges, target)
    log.info("int8 ranges of %s written to %s", checkpoint, target)
    return target
