"""Find, recognise and load Wav2Lip 96x96 generator checkpoints.

Accepted (all hold the same generator, see :mod:`inference.engines.wav2lip_model`):

* TorchScript archives (``Wav2Lip-SD-GAN.pt``, ``Wav2Lip-SD-NOGAN.pt``): ``torch.load`` refuses
  them under ``weights_only``, so they go through ``torch.jit.load`` and only their
  ``state_dict()`` is used; their code is never run.
* legacy ``torch.save`` dicts ``{state_dict, optimizer, global_step, global_epoch}``
  (``wav2lip_gan.pth``, ``wav2lip.pth``), keys with or without the ``module.`` prefix that
  ``DataParallel`` adds;
* a bare generator ``state_dict`` saved with ``torch.save``.

Everything else (256/288/384 px community models, SyncNet, the discriminator, truncated or
non-torch files) is refused with a ``ValueError`` that says what the file looks like.
"""

from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch

from inference.engines.wav2lip_model import (
    EXPECTED_PARAMETERS,
    EXPECTED_STATE_ENTRIES,
    Wav2Lip,
)

log = logging.getLogger(__name__)

Variant = Literal["gan", "nogan"]

CHECKPOINT_NAMES: dict[Variant, tuple[str, ...]] = {
    "gan": ("Wav2Lip-SD-GAN.pt", "wav2lip_gan.pth"),
    "nogan": ("Wav2Lip-SD-NOGAN.pt", "wav2lip.pth"),
}
"""Usual file names per variant, preferred first (the TorchScript releases are the newer)."""

_EXPECTED = (
    "a Wav2Lip 96x96 generator: a TorchScript archive (Wav2Lip-SD-GAN.pt / Wav2Lip-SD-NOGAN.pt), "
    "a torch.save dict with 'state_dict' (wav2lip_gan.pth / wav2lip.pth) or a bare state_dict, "
    f"with {EXPECTED_STATE_ENTRIES} entries and {EXPECTED_PARAMETERS:,} parameters"
)
_PREFIX = "module."
_N_FACE_BLOCKS = 7  # face_encoder_blocks and face_decoder_blocks of the 96x96 generator


def find_checkpoint(folder: Path, variant: Variant) -> Path | None:
    """Return the first checkpoint of ``variant`` found in ``folder`` by its usual names.

    Exact names win; a case-insensitive match is accepted next because downloads from some
    mirrors change the case.
    """
    if not folder.is_dir():
        return None
    names = CHECKPOINT_NAMES[variant]
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    by_lower = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for name in names:
        found = by_lower.get(name.lower())
        if found is not None:
            return found
    return None


def load_wav2lip(path: str | Path, device: str = "cpu", *, allow_pickle: bool = False) -> Wav2Lip:
    """Load a Wav2Lip 96x96 checkpoint in any accepted format; return the model in eval mode.

    ``allow_pickle`` lets a legacy file that ``torch.load(weights_only=True)`` refuses be
    unpickled fully; that can run arbitrary code, so only use it for files you trust.
    Raises ``ValueError`` naming the file, what it looks like and what was expected.
    """
    path = Path(path)
    state, fmt = read_state_dict(path, allow_pickle=allow_pickle)
    model = Wav2Lip()
    model.load_state_dict(state, strict=True)
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("loaded Wav2Lip generator from %s (%s) on %s", path, fmt, device)
    return model


def read_state_dict(
    path: Path, *, allow_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], str]:
    """Return the validated generator state_dict of ``path`` and a name for its format."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist or is not a file; expected {_EXPECTED}")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # Recent torch deprecates TorchScript, yet the official .pt files are
                # TorchScript and jit.load is the only way to read them.
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # torch raises plain RuntimeError for any damage
            raise ValueError(
                f"checkpoint {path} looks like a TorchScript archive but cannot be read "
                f"(truncated or corrupt?): {_first_line(e)}; expected {_EXPECTED}"
            ) from e
        state = dict(scripted.state_dict())
        fmt = "TorchScript archive"
    else:
        obj = _torch_load(path, allow_pickle)
        state, fmt = _extract_state(obj, path)
    return _validate(state, path), fmt


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a ``code/`` folder and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n or n.endswith("constants.pkl") for n in names)


def _torch_load(path: Path, allow_pickle: bool) -> object:
    """``torch.load`` with ``weights_only=True``; damage and foreign files become ValueError."""
    is_zip = zipfile.is_zipfile(path)
    try:
        # mmap keeps the 416 MB legacy files (optimizer state included) out of RAM.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        message = str(e)
        if "Unsupported global" in message or "GLOBAL" in message:
            if allow_pickle:
                log.warning("loading %s with full unpickling (allow_pickle=True)", path)
                return torch.load(path, map_location="cpu", weights_only=False)
            raise ValueError(
                f"checkpoint {path} is a torch file holding Python objects that "
                "torch.load(weights_only=True) refuses; if you trust it, load it with "
                f"allow_pickle=True; expected {_EXPECTED}"
            ) from e
        raise ValueError(
            f"checkpoint {path} looks like {_sniff(path)}, not a readable torch checkpoint; "
            f"expected {_EXPECTED}"
        ) from e
    except Exception as e:  # RuntimeError (zip damage), EOFError, OSError ...
        raise ValueError(
            f"checkpoint {path} looks like {_sniff(path)} and cannot be read: "
            f"{_first_line(e)}; expected {_EXPECTED}"
        ) from e


def _sniff(path: Path) -> str:
    """A short guess at what a file that torch cannot read is, from its first bytes."""
    with path.open("rb") as f:
        head = f.read(64)
    size = path.stat().st_size
    if head.startswith(b"PK\x03\x04"):
        return f"a zip archive that is truncated or corrupt ({size} bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer file (the weights were never fetched)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download?)"
    if head.startswith(b"\x89PNG") or head.startswith(b"\xff\xd8\xff"):
        return "an image file"
    if len(head) > 8 and head[8:9] == b"{":
        return "a safetensors file (not supported)"
    if head[:1] == b"\x80" and size < 1_000_000:
        return f"a pickle that is truncated or corrupt ({size} bytes)"
    return f"an unknown or corrupt file ({size} bytes)"


def _extract_state(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Pull the generator weights out of what ``torch.load`` returned."""
    if isinstance(obj, torch.nn.Module):  # only reachable with allow_pickle
        return dict(obj.state_dict()), "pickled module"
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint {path} holds a {type(obj).__name__}, not a dict; expected {_EXPECTED}"
        )
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        return _tensors_only(inner, path), "legacy training checkpoint"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _tensors_only(obj, path), "bare state_dict"
    keys = ", ".join(sorted(str(k) for k in obj)[:8])
    raise ValueError(
        f"checkpoint {path} is a dict with keys [{keys}] and no generator 'state_dict'; "
        f"expected {_EXPECTED}"
    )


def _tensors_only(state: Mapping[object, object], path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"checkpoint {path}: state_dict entry {key!r} is a {type(value).__name__}, "
                f"not a tensor; expected {_EXPECTED}"
            )
        out[str(key)] = value
    return out


def _validate(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Strip ``module.`` where present and check keys and shapes against the generator."""
    if any(k.startswith(_PREFIX) for k in state):
        state = {k.removeprefix(_PREFIX): v for k, v in state.items()}
    expected = {k: tuple(v.shape) for k, v in Wav2Lip().state_dict().items()}
    # Checkpoints from torch < 0.4.1 lack BatchNorm's counter; it does not affect inference.
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            f"checkpoint {path} looks like {_describe(state, expected, missing, wrong)}; "
            f"expected {_EXPECTED}"
        )
    for key in optional - state.keys():
        state[key] = torch.tensor(0, dtype=torch.long)
    for key, value in state.items():
        if not key.endswith("num_batches_tracked") and not value.is_floating_point():
            raise ValueError(
                f"checkpoint {path}: {key} has dtype {value.dtype}, expected floating point "
                f"weights of {_EXPECTED}"
            )
    return state


def _describe(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    missing: list[str],
    wrong: list[str],
) -> str:
    """Name the kind of network a mismatching state_dict most likely belongs to."""
    keys = list(state)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("face_encoder.") and has("audio_encoder.") and not has("face_decoder_blocks."):
        return "a SyncNet (lip-sync expert) checkpoint, not the generator"
    if has("face_encoder_blocks.") and not has("face_decoder_blocks."):
        if has("binary_pred."):
            return "the Wav2Lip visual-quality discriminator, not the generator"
        return "a face encoder without a decoder, not the generator"
    n_enc = _count_blocks(keys, "face_encoder_blocks.")
    n_dec = _count_blocks(keys, "face_decoder_blocks.")
    if n_enc and n_dec and (n_enc != _N_FACE_BLOCKS or n_dec != _N_FACE_BLOCKS or wrong):
        detail = f"{n_enc} face encoder / {n_dec} decoder blocks (the 96x96 model has 7 / 7)"
        if wrong:
            key = wrong[0]
            detail += (
                f", {len(wrong)} tensors of other shapes (e.g. {key}: "
                f"{tuple(state[key].shape)} instead of {expected[key]})"
            )
        return f"a Wav2Lip generator of another size (256/288/384 px?): {detail}"
    parts = [f"{len(keys)} entries"]
    if missing:
        parts.append(f"{len(missing)} expected ones missing (e.g. {missing[0]})")
    if wrong:
        parts.append(f"{len(wrong)} of other shapes (e.g. {wrong[0]})")
    extra = [k for k in keys if k not in expected]
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    return "a different network: " + ", ".join(parts)


def _count_blocks(keys: list[str], prefix: str) -> int:
    """Number of distinct ``prefix<N>.`` indices among ``keys``."""
    return len({k[len(prefix) :].split(".", 1)[0] for k in keys if k.startswith(prefix)})


def _first_line(e: BaseException) -> str:
    # torch's messages go on for paragraphs; the first sentence is the useful part.
    text = str(e).strip()
    return text.splitlines()[0].split(". ")[0] if text else type(e).__name__
