"""Image bodies: EfficientNet-Lite0 (real ImageNet weights) and a small CNN.

Each body maps a normalised image batch ``[B, C, H, W]`` to penultimate features ``[B, D]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from safetransfer.errors import AssetMissingError, CheckpointError
from safetransfer.models.serialization import safe_torch_load

# EfficientNet-Lite's input normalisation (255·x − 127) / 128, written for pixels x in [0, 1].
EFFICIENTNET_MEAN = 127.0 / 255.0
EFFICIENTNET_STD = 128.0 / 255.0
EFFICIENTNET_FEATURES = 1280


class EfficientNetBody(nn.Module):
    """EfficientNet-Lite's convolutional trunk with global average pooling (no classifier).

    Tan & Le 2019, Lite variant (ReLU6, no squeeze-excitation). Fully convolutional, so 32 or
    64 px inputs run; padding is computed for ``image_size``. ``bn_momentum`` is PyTorch's
    (weight of the new batch in the running statistics).
    """

    def __init__(self, image_size: int, variant: str = "efficientnet-lite0", bn_momentum: float = 0.1) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise AssetMissingError(
                "EfficientNet-Lite model code is not installed: run `safetransfer assets install efficientnet-lite-code`."
            ) from err
        net = EfficientNet.from_name(variant, num_classes=1, image_size=image_size)
        del net._fc, net._dropout  # the head lives in TransferModel
        # The TF port keeps running statistics with momentum 0.01 (decay 0.99): after a short
        # fine-tuning on a new domain they still hold ImageNet's and eval-mode accuracy collapses.
        # PyTorch's usual 0.1 adapts within ~50 steps.
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn_momentum
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def load_imagenet(self, weights_path: Path) -> None:
        """Load the ImageNet trunk weights (the 1000-class classifier is dropped)."""
        state = safe_torch_load(weights_path)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        result = self.net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(
                f"ImageNet weights at {weights_path} do not fit EfficientNet-Lite0: "
                f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}."
            )


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """A small VGG-style CNN: two conv pairs with max-pooling, one conv, global pooling, an FC layer.

    ``widths=(32, 64, 128)`` and ``hidden=256`` by default (about 0.3M parameters); the tiny
    test variant uses ``(4, 8, 16)`` and 16.
    """

    def __init__(self, in_channels: int, widths: tuple[int, int, int] = (32, 64, 128), hidden: int = 256) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w1), *_conv_bn(w1, w1), nn.MaxPool2d(2),
            *_conv_bn(w1, w2), *_conv_bn(w2, w2), nn.MaxPool2d(2),
            *_conv_bn(w2, w3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(w3, hidden), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
