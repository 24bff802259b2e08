"""Datasets as the training loop sees them: a batch per step, already on the device, and the loss."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from bnlab.data import cifar10


class GaussianRegression:
    """The DLN's task (SPEC section 1): fit A x from x, x ~ N(0, input_std^2 I), A_ij ~ N(0, target_std^2).
    With `target_spectrum="orthogonal"`, A is instead target_std * sqrt(width) times the orthogonal factor of
    that Gaussian draw: the same expected Frobenius norm with every singular value equal (a calibration
    candidate: the Gaussian A's spread of singular values orders the modes a DLN learns one by one).

    The data are fixed for the run, drawn from `seed`, and the batch is the whole dataset (full-batch
    gradient descent). The loss is half the squared error summed over samples (TensorFlow's l2_loss; the
    default, chosen by measurement: docs/calibration.md), the plain sum, or the mean over samples.
    """

    classification = False

    def __init__(self, width: int, num_samples: int, seed: int, input_std: float, target_std: float,
                 loss: str, device: torch.device, dtype: torch.dtype, target_spectrum: str = "gaussian"):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(num_samples, width, generator=g, dtype=torch.float64) * input_std
        a = torch.randn(width, width, generator=g, dtype=torch.float64) * target_std
        if target_spectrum == "orthogonal":
            q, r = torch.linalg.qr(a)
            a = q * torch.sign(torch.diagonal(r)) * target_std * width ** 0.5  # the sign makes Q Haar-distributed
        self.inputs = x.to(device, dtype)
        self.targets = (x @ a.T).to(device, dtype)
        self.reduction = loss

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs, self.targets

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        squared = (outputs - targets).square().sum()
        if self.reduction == "half_sum":
            return squared / 2
        if self.reduction == "mean":
            return squared / outputs.shape[0]
        return squared


class ImageClassification:
    """CIFAR-10 as the training loop sees it: the images resident on the training device, scaled as
    `input_scale` says (INPUT_SCALES; standardized per channel by default), and batches drawn there.

    Each epoch is a permutation of the training images drawn from (seed, epoch) alone, so every variant
    trained with one seed on one kind of device sees the same batches in the same order (paired
    comparisons); the last partial batch of an epoch is dropped. Augmentation (random crop after zero
    padding of 4, horizontal flip) runs on the device from its own generator, seeded likewise. Both are
    drawn by the device's generator, so a GPU run's batches differ from a CPU run's.
    """

    classification = True

    def __init__(self, data: dict, batch_size: int, seed: int, train_subset: int | None, augment: bool,
                 eval_train_examples: int, eval_test_examples: int | None, device: torch.device, dtype: torch.dtype,
                 input_scale: str = "standardize"):
        train_x, train_y = data["train_x"], data["train_y"]
        copy = {"jpeg": "JPEG copy", "torchvision": "torchvision files"}.get(data.get("source"), "given tensors")
        self.description = f"CIFAR-10 ({copy}, sha256 {data.get('sha256', '?')[:16]})"
        if train_subset is not None:  # a fixed subset, the same for every run (not drawn from the run's seed)
            keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))[:train_subset].sort().values
            train_x, train_y = train_x[keep], train_y[keep]
        self.device, self.dtype = device, dtype
        self.offset, self.divisor = input_transform(input_scale, train_x)
        self.train_x, self.train_y = self._standardize(train_x), train_y.to(device)
        self._sample(batch_size, seed, augment)
        # Evaluation sets: fixed random subsets (the same for every run) of the training images and of the
        # test set; None means all of it.
        self.eval_sets = {"train": _fixed_subset(self.train_x, self.train_y, eval_train_examples),
                          "test": _fixed_subset(self._standardize(data["test_x"]), data["test_y"].to(device),
                                                eval_test_examples)}

    def _sample(self, batch_size: int, seed: int, augment: bool) -> None:
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.batches_per_epoch = len(self.train_y) // batch_size
        self._epoch, self._order = -1, None

    def sampled(self, batch_size: int, seed: int, augment: bool) -> ImageClassification:
        """The same images (shared, never written to) drawn into batches as these arguments say, from the
        first epoch: what a new ImageClassification of the same images would be."""
        other = copy.copy(self)
        other._sample(batch_size, seed, augment)
        return other

    def _standardize(self, images: torch.Tensor) -> torch.Tensor:
        """(pixel / 255 - offset) / divisor per channel (input_transform), computed in float64 for each of the
        256 values a pixel can take, then looked up: the elementwise formula's values at a fraction of its cost
        (it took some 9 s a run on one CPU thread). The 8-bit images go to the device first, the smallest copy."""
        images = images.to(self.device)
        levels = torch.arange(256, dtype=torch.float64, device=self.device) / 255
        offset, divisor = self.offset.to(self.device)[:, None], self.divisor.to(self.device)[:, None]
        table = ((levels - offset) / divisor).to(self.dtype)
        channels = images.shape[1]
        rows = torch.arange(0, 256 * channels, 256, dtype=torch.int32, device=self.device).view(1, channels, 1, 1)
        return table.flatten().index_select(0, (images.int() + rows).flatten()).view(images.shape)

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:  # drawn where the images are: a copy from the host would make it wait for a GPU
            g = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.train_y), generator=g, device=self.device)
        chosen = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        x, y = self.train_x[chosen], self.train_y[chosen]
        if self.augment:
            x = augment(x, torch.Generator(x.device).manual_seed(self.seed * 1_000_003 + step + 1))
        return x, y

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)


INPUT_SCALES = {
    "standardize": "per channel: (pixel / 255 - mean) / std, with the training images' moments",
    "unit": "pixel / 255, in [0, 1]",
    "raw": "the 8-bit values 0-255 as they are",
}


def input_transform(scale: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel offset and divisor (float64) that map a pixel p to (p / 255 - offset) / divisor for the
    input scaling `scale` (INPUT_SCALES)."""
    if scale == "standardize":
        return channel_moments(images)
    zeros = torch.zeros(images.shape[1], dtype=torch.float64)
    if scale == "unit":
        return zeros, zeros + 1
    if scale == "raw":
        return zeros, zeros + 1 / 255
    raise ValueError(f"data.input_scale: unknown scaling {scale!r}; allowed: {', '.join(INPUT_SCALES)}")


def channel_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (n - 1 in the denominator) of each channel of 8-bit images (N, C, H, W),
    as pixel / 255, in float64, from the channel's histogram: exact counts of the 256 values."""
    n = images.numel() // images.shape[1]
    counts = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256)
                          for c in range(images.shape[1])]).double()
    levels = torch.arange(256, dtype=torch.float64, device=images.device) / 255
    mean = (counts * levels).sum(1) / n
    var = (counts * (levels - mean[:, None]).square()).sum(1) / (n - 1)
    return mean.cpu(), var.sqrt().cpu()


def _fixed_subset(x: torch.Tensor, y: torch.Tensor, count: int | None):
    if count is None or count >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(1))[:count].sort().values.to(y.device)
    return x[keep], y[keep]


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of each image after zero padding by `pad`, and a horizontal flip with probability 1/2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    cols = torch.where(flip.view(n, 1, 1, 1), cols.flip(-1), cols)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


DATASETS = {"gaussian": GaussianRegression, "cifar10": ImageClassification}


def classifies(data_name: str) -> bool:
    """Whether runs on this dataset are judged by accuracy (classification) or by their loss alone."""
    return DATASETS[data_name].classification


def build_data(cfg, device: torch.device, dtype: torch.dtype):
    d = cfg.data
    if d.name == "gaussian":
        return GaussianRegression(cfg.model.width, d.num_samples, d.seed, d.input_std, d.target_std, d.loss,
                                  device, dtype, d.target_spectrum)
    if d.name == "cifar10":
        return _cifar10_images(d, device, dtype).sampled(d.batch_size, d.seed, d.augment)
    raise ValueError(f"data.name: unknown dataset {d.name!r}; allowed: {', '.join(DATASETS)}")


# A pool worker (bnlab.launch.local) trains run after run on the same images: it reads, checks and
# standardizes them once, not at every run (about 1 s of a CPU thread each). One entry, keyed on every value
# that shapes the tensors; a run that asks for other images replaces it.
_images: dict[tuple, ImageClassification] = {}


def _cifar10_images(d, device: torch.device, dtype: torch.dtype) -> ImageClassification:
    key = (str(d.root), d.source, str(d.cache_dir), d.sha256, d.train_subset, d.input_scale, d.eval.train_examples,
           d.eval.test_examples, str(device), dtype)
    if key not in _images:
        images = cifar10.load(d.root, d.source, d.cache_dir, d.download, d.sha256)
        _images.clear()
        _images[key] = ImageClassification(images, d.batch_size, d.seed, d.train_subset, d.augment,
                                           d.eval.train_examples, d.eval.test_examples, device, dtype, d.input_scale)
    return _images[key]
