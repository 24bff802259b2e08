"""VGG for 32x32 CIFAR-10 images (SPEC section 1): 3x3 convs, each followed by its normalization slot
then ReLU, 2x2 max pools, then one linear classifier on the flattened 512 features."""

from __future__ import annotations

from torch import nn

from bnlab.norms import make_norm

# Channel lists of the standard VGG depths; "M" is a 2x2 max pool.
LAYOUTS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class ConvBlock(nn.Module):
    """conv -> normalization slot -> ReLU. The slot's output (noise included) is the activation the
    probes record: the input to the nonlinearity."""

    def __init__(self, in_channels: int, out_channels: int, norm: nn.Module, bias: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm = norm
        self.relu = nn.ReLU()  # not in place: the probes hold on to the norm's output, the ReLU's input

    def forward(self, x):
        return self.relu(self.norm(self.conv(x)))


class VGG(nn.Module):
    """`depth` is one of LAYOUTS; `width` multiplies every channel count (at least 1 channel each).

    The conv bias exists only without normalization (a norm's shift replaces it). Modules are registered
    in forward order, so named_parameters() is in forward order, which the probes rely on.
    """

    def __init__(self, depth: str = "vgg16", width: float = 1.0, norm_kind: str = "none", num_classes: int = 10,
                 **norm_kwargs):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"model.depth: unknown VGG {depth!r}; allowed: {', '.join(LAYOUTS)}")
        layers, channels = [], 3
        for item in LAYOUTS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = max(1, round(item * width))
            norm = make_norm(norm_kind, out, **norm_kwargs)
            layers.append(ConvBlock(channels, out, norm, bias=norm_kind == "none"))
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)  # 32x32 -> 1x1 after five pools
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)  # Glorot, as in the paper
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))

    def activation_modules(self) -> dict[int, str]:
        """Layer number (from 1) -> name of the module whose output is that layer's activation (the input
        of its ReLU). The classifier's output is the logits."""
        names = [f"features.{i}.norm" for i, m in enumerate(self.features) if isinstance(m, ConvBlock)]
        numbers = {n + 1: name for n, name in enumerate(names)}
        numbers[len(names) + 1] = "classifier"
        return numbers
