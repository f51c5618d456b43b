"""The Wav2Lip 96x96 generator, written from the published architecture facts.

The module and attribute names are chosen so that ``state_dict()`` keys match the released
checkpoints exactly (``face_encoder_blocks.1.0.conv_block.0.weight`` ...): one architecture
serves the TorchScript ``Wav2Lip-SD-*.pt`` files and the legacy ``wav2lip*.pth`` dicts.

Shapes: ``audio`` (B, 1, 80, 16) mel window in [-4, 4]; ``face`` (B, 6, 96, 96) in [0, 1]
(channels 0-2 the target face with its lower half zeroed, 3-5 the reference face, both BGR);
output (B, 3, 96, 96) BGR in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

FACE_SIZE = 96
"""Side of the square face crop the generator works on."""
MEL_BANDS = 80
MEL_STEPS = 16
EXPECTED_PARAMETERS = 36_298_035
"""Trainable parameters of the released 96x96 generator."""
EXPECTED_STATE_ENTRIES = 352
"""Entries of its state_dict (parameters plus BatchNorm buffers)."""

_Size = int | tuple[int, int]


class Conv2d(nn.Module):
    """conv (with bias) -> BatchNorm -> (+ input when residual) -> ReLU.

    The conv and the norm live in ``conv_block`` (indices 0 and 1) because that is where the
    released checkpoints keep them.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: _Size,
        stride: _Size,
        padding: _Size,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """transposed conv (with bias) -> BatchNorm -> ReLU (never residual)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(channels: int) -> Conv2d:
    """3x3 stride-1 residual block: keeps shape, adds its input back before the ReLU."""
    return Conv2d(channels, channels, 3, 1, 1, residual=True)


def _down(cin: int, cout: int, n_res: int, stride: _Size = 2) -> nn.Sequential:
    """A strided 3x3 conv followed by ``n_res`` residual blocks at the new width."""
    return nn.Sequential(Conv2d(cin, cout, 3, stride, 1), *(_res(cout) for _ in range(n_res)))


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    """A stride-2 transposed conv that doubles the side, then ``n_res`` residual blocks."""
    return nn.Sequential(
        Conv2dTranspose(cin, cout, 3, 2, 1, output_padding=1),
        *(_res(cout) for _ in range(n_res)),
    )


class Wav2Lip(nn.Module):
    """The 96x96 Wav2Lip generator: face U-Net encoder, audio encoder, decoder with skips."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96
                _down(16, 32, 2),  # 48
                _down(32, 64, 3),  # 24
                _down(64, 128, 2),  # 12
                _down(128, 256, 2),  # 6
                _down(256, 512, 1),  # 3
                nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            Conv2d(1, 32, 3, 1, 1),
            _res(32),
            _res(32),
            Conv2d(32, 64, 3, (3, 1), 1),  # 27 x 16
            _res(64),
            _res(64),
            Conv2d(64, 128, 3, 3, 1),  # 9 x 6
            _res(128),
            _res(128),
            Conv2d(128, 256, 3, (3, 2), 1),  # 3 x 3
            _res(256),
            Conv2d(256, 512, 3, 1, 0),  # 1 x 1
            Conv2d(512, 512, 1, 1, 0),
        )
        # Input widths include the skip concatenated after the previous block.
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1 -> cat 1024
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), _res(512)),  # 3 -> 1024
                _up(1024, 512, 2),  # 6 -> cat 768
                _up(768, 384, 2),  # 12 -> 512
                _up(512, 256, 2),  # 24 -> 320
                _up(320, 128, 2),  # 48 -> 160
                _up(160, 64, 2),  # 96 -> 80
            ]
        )
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, 1, 1, 0),
            nn.Sigmoid(),
        )

    def forward(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        """Predict the lower-half-repaired face (B, 3, 96, 96) in [0, 1] from mel and face."""
        x = self.audio_encoder(audio)
        skips: list[torch.Tensor] = []
        feat = face
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)
        for block in self.face_decoder_blocks:
            x = block(x)
            # Decoder output first, then the encoder feature of the same size (innermost first).
            x = torch.cat((x, skips.pop()), dim=1)
        out: torch.Tensor = self.output_block(x)
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (the figure the 36,298,035 fact refers to)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
