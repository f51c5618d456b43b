"""What every Wav2Lip backend is (:class:`Backend`), and the model rewrites the fast ones share
(BatchNorm folded, channels_last). Kept apart from :mod:`inference.engines.wav2lip_backends`
(the backends and the choice between them) so that a backend in a module of its own
(``wav2lip_cuda``) builds on it while that module's factory imports the backend.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from inference.engines.wav2lip_model import Wav2Lip


class Backend(ABC):
    """Runs the generator on one batch; one instance per engine, used from one thread."""

    name: str
    device: str = "cpu"
    buckets: tuple[int, ...] = ()
    """Batch sizes the backend serves in (padding smaller batches); () for any size."""

    @abstractmethod
    def run(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        """(B, 1, 80, 16) + (B, 6, 96, 96) float32 -> (B, 3, 96, 96) float32 in [0, 1]."""

    def run_tensors(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """:meth:`run` on float32 tensors of the backend's device, the result left there
        (the device path of ``wav2lip_torch_path``); called under ``torch.inference_mode``
        on the caller's CUDA stream.

        This default goes through :meth:`run` on the host (OpenVINO, test stubs); the torch
        backends run their module on the tensors directly.
        """
        out = self.run(mel.cpu().numpy(), face.cpu().numpy())
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(mel.device)

    def graphs_state(self) -> dict[str, object] | None:
        """CUDA graph use (the ``cuda`` backend reports its buckets); None: no graphs here."""
        return None


def fold_batchnorm(model: Wav2Lip) -> Wav2Lip:
    """A copy of ``model`` with each BatchNorm folded into the conv before it (eval only).

    Same function, one op fewer per block; in fp16/bf16 it also avoids normalising in low
    precision.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        block = getattr(module, "conv_block", None)
        if isinstance(block, nn.Sequential) and isinstance(block[1], nn.BatchNorm2d):
            conv = block[0]
            assert isinstance(conv, nn.Conv2d | nn.ConvTranspose2d)
            transpose = isinstance(conv, nn.ConvTranspose2d)
            block[0] = fuse_conv_bn_eval(conv, block[1], transpose=transpose)
            block[1] = nn.Identity()
    return folded


def to_channels_last(model: Wav2Lip) -> Wav2Lip:
    """Store 4-D weights NHWC, the layout oneDNN and cuDNN convolutions are fastest in."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
