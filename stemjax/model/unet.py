"""Fully convolutional U-Net (Flax NNX) mapping an ADF image to per-pixel class logits.

Input (B, H, W) or (B, H, W, 1) float32 normalised images; output (B, H, W, num_classes) float32
logits (NHWC, channel last). `depth` down-sampling levels, so H and W must be multiples of
2**depth; channels `width * 2**level`; `blocks_per_level` conv blocks per level (residual or
plain), skip connections by concatenation. GroupNorm is the default normalisation: it keeps no
batch statistics, so a step is a pure function of (params, batch) and shards over the batch
without cross-device statistics; 'layer' (per-pixel, over channels) also makes the network
independent of the tile size at prediction time.

Train/eval mode follows the NNX convention: modules are built in training mode (dropout on,
BatchNorm updating its statistics); `model.eval()` / `model.train()` switch in place and
`nnx.view(model, deterministic=True, use_running_average=True)` gives an eval view sharing the
parameters. `model(x, deterministic=True)` overrides the mode for one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

NORMS = ("group", "batch", "layer", "none")
ACTIVATIONS = {"gelu": nnx.gelu, "relu": nnx.relu, "silu": nnx.silu}
DOWNSAMPLES = ("maxpool", "conv")
UPSAMPLES = ("transpose", "resize")


@dataclass
class ModelConfig:
    """U-Net hyper-parameters (Hydra schema `model/`; plain, mutable dataclass).

    depth: number of 2× down-sampling levels (H, W must be multiples of 2**depth).
    width: channels at full resolution, doubled at each level. blocks_per_level: conv blocks
    (two 3×3 convs each) per level on each side. residual: add the block input (1×1-projected
    if the width changes). norm: 'group' | 'batch' | 'layer' | 'none'; norm_groups: GroupNorm
    groups (gcd with the channel count, so any width works). activation: 'gelu' | 'relu' |
    'silu'. dropout: rate inside each block (0 disables). downsample: 'maxpool' | 'conv'
    (strided 2×2). upsample: 'transpose' (2×2 stride-2 transposed conv) | 'resize' (nearest
    2× + 3×3 conv). num_classes: output channels (background + defect classes; the training
    loop sets it from the registry, K + 1).
    """

    depth: int = 4
    width: int = 32
    blocks_per_level: int = 2
    residual: bool = True
    norm: str = "group"
    norm_groups: int = 8
    activation: str = "gelu"
    dropout: float = 0.0
    downsample: str = "maxpool"
    upsample: str = "transpose"
    num_classes: int = 8


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ValueError naming the first bad field of `cfg`."""
    checks = [
        (cfg.depth >= 0, f"model.depth must be >= 0, got {cfg.depth}"),
        (cfg.width >= 1, f"model.width must be >= 1, got {cfg.width}"),
        (
            cfg.blocks_per_level >= 1,
            f"model.blocks_per_level must be >= 1, got {cfg.blocks_per_level}",
        ),
        (cfg.norm in NORMS, f"model.norm must be one of {NORMS}, got {cfg.norm!r}"),
        (cfg.norm_groups >= 1, f"model.norm_groups must be >= 1, got {cfg.norm_groups}"),
        (
            cfg.activation in ACTIVATIONS,
            f"model.activation must be one of {tuple(ACTIVATIONS)}, got {cfg.activation!r}",
        ),
        (0.0 <= cfg.dropout < 1.0, f"model.dropout must be in [0, 1), got {cfg.dropout}"),
        (
            cfg.downsample in DOWNSAMPLES,
            f"model.downsample must be one of {DOWNSAMPLES}, got {cfg.downsample!r}",
        ),
        (
            cfg.upsample in UPSAMPLES,
            f"model.upsample must be one of {UPSAMPLES}, got {cfg.upsample!r}",
        ),
        (cfg.num_classes >= 2, f"model.num_classes must be >= 2, got {cfg.num_classes}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _conv(cin: int, cout: int, k: int, rngs: nnx.Rngs, stride: int = 1) -> nnx.Conv:
    return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding="SAME", rngs=rngs)


class Norm(nnx.Module):
    """The configured normalisation over channels-last features (identity for 'none')."""

    def __init__(self, kind: str, channels: int, groups: int, *, rngs: nnx.Rngs):
        self.kind = kind
        if kind == "group":
            groups = math.gcd(channels, groups)
            self.layer = nnx.GroupNorm(channels, num_groups=groups, rngs=rngs)
        elif kind == "batch":
            self.layer = nnx.BatchNorm(channels, momentum=0.9, rngs=rngs)
        elif kind == "layer":
            self.layer = nnx.LayerNorm(channels, rngs=rngs)
        else:
            self.layer = None

    def __call__(self, x, *, deterministic: bool | None = None):
        if self.layer is None:
            return x
        if self.kind == "batch":
            return self.layer(x, use_running_average=deterministic)
        return self.layer(x)


class ConvBlock(nnx.Module):
    """conv3×3 → norm → act → dropout → conv3×3 → norm (+ input) → act; (B, H, W, cin) → cout."""

    def __init__(self, cin: int, cout: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.act = ACTIVATIONS[cfg.activation]
        self.conv1 = _conv(cin, cout, 3, rngs)
        self.norm1 = Norm(cfg.norm, cout, cfg.norm_groups, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None
        self.conv2 = _conv(cout, cout, 3, rngs)
        self.norm2 = Norm(cfg.norm, cout, cfg.norm_groups, rngs=rngs)
        self.residual = cfg.residual
        self.skip = _conv(cin, cout, 1, rngs) if cfg.residual and cin != cout else None

    def __call__(self, x, *, deterministic: bool | None = None):
        h = self.act(self.norm1(self.conv1(x), deterministic=deterministic))
        if self.dropout is not None:
            h = self.dropout(h, deterministic=deterministic)
        h = self.norm2(self.conv2(h), deterministic=deterministic)
        if self.residual:
            h = h + (x if self.skip is None else self.skip(x))
        return self.act(h)


class Stage(nnx.Module):
    """`n` ConvBlocks in sequence, the first changing cin → cout."""

    def __init__(self, cin: int, cout: int, n: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.blocks = nnx.List(
            [ConvBlock(cin if i == 0 else cout, cout, cfg, rngs=rngs) for i in range(n)]
        )

    def __call__(self, x, *, deterministic: bool | None = None):
        for block in self.blocks:
            x = block(x, deterministic=deterministic)
        return x


class Down(nnx.Module):
    """2× spatial down-sampling, channels unchanged: max-pool or strided 2×2 conv."""

    def __init__(self, channels: int, kind: str, *, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 2, rngs, stride=2) if kind == "conv" else None

    def __call__(self, x):
        if self.conv is None:
            return nnx.max_pool(x, (2, 2), strides=(2, 2))
        return self.conv(x)


class Up(nnx.Module):
    """2× spatial up-sampling cin → cout: transposed 2×2 conv, or nearest resize + 3×3 conv."""

    def __init__(self, cin: int, cout: int, kind: str, *, rngs: nnx.Rngs):
        self.kind = kind
        if kind == "transpose":
            self.conv = nnx.ConvTranspose(
                cin, cout, (2, 2), strides=(2, 2), padding="SAME", rngs=rngs
            )
        else:
            self.conv = _conv(cin, cout, 3, rngs)

    def __call__(self, x):
        if self.kind == "resize":
            b, h, w, c = x.shape
            x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
        return self.conv(x)


class UNet(nnx.Module):
    """Per-pixel defect classifier: (B, H, W[, 1]) image → (B, H, W, num_classes) logits.

    Levels 0..depth have `width * 2**level` channels; the encoder keeps the output of each
    level above the bottleneck as a skip, the decoder up-samples, concatenates the skip and
    runs a Stage; a 1×1 conv gives the logits.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        validate_model_config(cfg)
        self.depth = cfg.depth
        self.num_classes = cfg.num_classes
        chans = [cfg.width * 2**level for level in range(cfg.depth + 1)]
        n = cfg.blocks_per_level
        self.stem = _conv(1, chans[0], 3, rngs)
        self.encoder = nnx.List(
            [
                Stage(chans[max(level - 1, 0)], chans[level], n, cfg, rngs=rngs)
                for level in range(cfg.depth + 1)
            ]
        )
        self.down = nnx.List(
            [Down(chans[level], cfg.downsample, rngs=rngs) for level in range(cfg.depth)]
        )
        self.up = nnx.List(
            [
                Up(chans[level + 1], chans[level], cfg.upsample, rngs=rngs)
                for level in range(cfg.depth)
            ]
        )
        self.decoder = nnx.List(
            [Stage(2 * chans[level], chans[level], n, cfg, rngs=rngs) for level in range(cfg.depth)]
        )
        self.head = _conv(chans[0], cfg.num_classes, 1, rngs)

    @property
    def size_multiple(self) -> int:
        """H and W must be multiples of this (2**depth); tile sizes at prediction too."""
        return 2**self.depth

    def __call__(self, x, *, deterministic: bool | None = None):
        """Logits (B, H, W, num_classes) float32 for images (B, H, W) or (B, H, W, 1).

        deterministic: None uses the module's mode (`train()` / `eval()`); True/False
        overrides it for this call (dropout off/on, BatchNorm running/batch statistics).
        """
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] != 1:
            raise ValueError(f"UNet expects images (B, H, W) or (B, H, W, 1), got {x.shape}")
        m = self.size_multiple
        if x.shape[1] % m or x.shape[2] % m:
            raise ValueError(
                f"UNet with depth {self.depth} needs H and W divisible by {m}, "
                f"got image shape {x.shape}"
            )
        h = self.stem(x.astype(jnp.float32))
        skips = []
        for level, stage in enumerate(self.encoder):
            h = stage(h, deterministic=deterministic)
            if level < self.depth:
                skips.append(h)
                h = self.down[level](h)
        for level in reversed(range(self.depth)):
            h = self.up[level](h)
            h = jnp.concatenate([h, skips[level]], axis=-1)
            h = self.decoder[level](h, deterministic=deterministic)
        return self.head(h)


def param_count(model: nnx.Module) -> int:
    """Number of trainable scalars (nnx.Param) in `model`."""
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def create_unet(cfg: ModelConfig, *, seed: int = 0) -> UNet:
    """`UNet(cfg)` initialised inside one compiled program, parameters from an "rbg" key `seed`
    (dropout stream: the default key `seed + 1`).

    Why: eager initialisation compiles every initializer call separately, and threefry's
    truncated-normal sampling is slow to compile: ~11 s on a 2-core CPU for the tiny model,
    against ~2 s this way. rbg bits are deterministic for a given backend (not across backends).
    """

    def make():
        rngs = nnx.Rngs(params=jax.random.key(seed, impl="rbg"), dropout=seed + 1)
        return UNet(cfg, rngs=rngs)

    return nnx.jit(make)()
