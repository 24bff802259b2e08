"""VGG for 32x32 CIFAR-10 images (SPEC section 1): 3x3 convs, each followed by its normalization slot
then ReLU, 2x2 max pools, then a classifier on the flattened 512 features: one linear layer (the SPEC's
reading) or VGG's own fully connected head, 512-512-10."""

from __future__ import annotations

import torch
from torch import nn

from bnlab.norms import make_norm, normalization
from bnlab.util.checks import check, check_positive

# Channel lists of the standard VGG depths; "M" is a 2x2 max pool.
LAYOUTS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
HEADS = {"linear": 1, "fc": 3}  # classifier layers: one Linear(512, 10), or 512-512-10 with ReLUs between
INITS = ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform")
CONV_BIAS = ("auto", True, False)


def validate_vgg(cfg) -> None:
    """The model's keys (bnlab.models.ModelFamily.validate); the data's are bnlab.config's."""
    m = cfg.model
    check(m.depth in LAYOUTS, "model.depth", m.depth, ", ".join(LAYOUTS))
    check_positive(cfg, "model.width")
    check(m.init in INITS, "model.init", m.init, ", ".join(INITS))
    check_positive(cfg, "model.init_gain")
    check(m.head in HEADS, "model.head", m.head, ", ".join(HEADS))
    check(m.conv_bias in CONV_BIAS, "model.conv_bias", m.conv_bias, "auto, true, false")


def init_weight(weight, scheme: str, gain: float = 1.0) -> None:
    """Glorot (Xavier) keeps the variance of forward and backward signals equal through a *linear* layer:
    Var(W) = 2 / (fan_in + fan_out). He keeps it through a layer followed by a ReLU, which halves it:
    Var(W) = 2 / fan_in. Through VGG16's 13 ReLU convs Glorot loses a factor of about 2 of variance per layer.
    `gain` multiplies the weights (their standard deviation), so gain^2 scales the variance: with equal fans
    He's variance is Glorot's times 2, and glorot_* with gain sqrt(1.6) lies between the two."""
    if scheme == "glorot_uniform":
        nn.init.xavier_uniform_(weight)
    elif scheme == "glorot_normal":
        nn.init.xavier_normal_(weight)
    elif scheme == "he_normal":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    elif scheme == "he_uniform":
        nn.init.kaiming_uniform_(weight, mode="fan_in", nonlinearity="relu")
    else:
        raise ValueError(f"model.init: unknown initialization {scheme!r}; allowed: {', '.join(INITS)}")
    if gain != 1.0:
        with torch.no_grad():
            weight.mul_(gain)


class ConvBlock(nn.Module):
    """conv -> normalization slot -> ReLU (or conv -> ReLU -> slot, `after_activation`). The slot's output
    (noise included) is the activation the probes record: the input to the nonlinearity, or with the slot
    after it, the block's output."""

    def __init__(self, in_channels: int, out_channels: int, norm: nn.Module, bias: bool,
                 after_activation: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm = norm
        self.relu = nn.ReLU()  # not in place: the probes hold on to the norm's output, the ReLU's input
        self.after_activation = after_activation

    def forward(self, x):
        if self.after_activation:
            return self.norm(self.relu(self.conv(x)))
        return self.relu(self.norm(self.conv(x)))


class LinearBlock(nn.Module):
    """A hidden layer of the fully connected head: linear -> normalization slot -> ReLU (or the slot after it)."""

    def __init__(self, in_features: int, out_features: int, norm: nn.Module, bias: bool,
                 after_activation: bool = False):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm = norm
        self.relu = nn.ReLU()
        self.after_activation = after_activation

    def forward(self, x):
        if self.after_activation:
            return self.norm(self.relu(self.linear(x)))
        return self.relu(self.norm(self.linear(x)))


class VGG(nn.Module):
    """`depth` is one of LAYOUTS; `width` multiplies every channel count (at least 1 channel each).

    `head`: "linear" (one Linear to the classes) or "fc" (two hidden layers as wide as the last conv,
    each normalized like the convs, then the output layer). `conv_bias`: "auto" gives a layer a bias only
    without normalization (a norm's shift replaces it); true or false force it. `init` is the weight
    initialization of every conv and linear layer (INITS), its weights times `init_gain`; biases start at
    zero. Modules are registered in forward order, so named_parameters() is in forward order, which the
    probes rely on.
    """

    def __init__(self, depth: str = "vgg16", width: float = 1.0, norm_kind: str = "none", num_classes: int = 10,
                 init: str = "he_normal", head: str = "fc", conv_bias="auto", init_gain: float = 1.0,
                 **norm_kwargs):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"model.depth: unknown VGG {depth!r}; allowed: {', '.join(LAYOUTS)}")
        if head not in HEADS:
            raise ValueError(f"model.head: unknown head {head!r}; allowed: {', '.join(HEADS)}")
        entry = normalization(norm_kind)
        after = entry.after_activation
        # auto: a norm's shift replaces the bias where it comes before the ReLU
        bias = not entry.shifts if conv_bias == "auto" else bool(conv_bias)
        layers, channels = [], 3
        for item in LAYOUTS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = max(1, round(item * width))
            layers.append(ConvBlock(channels, out, make_norm(norm_kind, out, **norm_kwargs), bias, after))
            channels = out
        self.features = nn.Sequential(*layers)
        hidden = [LinearBlock(channels, channels, make_norm(norm_kind, channels, **norm_kwargs), bias, after)
                  for _ in range(HEADS[head] - 1)]
        # 32x32 -> 1x1 after five pools; the output layer keeps its bias (it has no norm to replace it)
        self.classifier = nn.Sequential(*hidden, nn.Linear(channels, num_classes)) if hidden else \
            nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                init_weight(m.weight, init, init_gain)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if entry.reparametrize is not None:  # every layer with a normalization slot: all but the output layer
            for block in [*self.features, *hidden]:
                if isinstance(block, ConvBlock):
                    entry.reparametrize(block.conv)
                elif isinstance(block, LinearBlock):
                    entry.reparametrize(block.linear)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))

    def activation_modules(self) -> dict[int, str]:
        """Layer number (from 1) -> name of the module whose output is that layer's activation (the input
        of its ReLU). The classifier's output is the logits."""
        names = [f"features.{i}.norm" for i, m in enumerate(self.features) if isinstance(m, ConvBlock)]
        if isinstance(self.classifier, nn.Sequential):
            last = len(self.classifier) - 1
            names += [f"classifier.{i}.norm" for i in range(last)] + [f"classifier.{last}"]
        else:
            names.append("classifier")
        return {n + 1: name for n, name in enumerate(names)}

