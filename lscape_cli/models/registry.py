"""Registry of architectures as plain data: name -> (config dataclass, builder).

A checkpoint stores ``{"name": ..., "config": {...}}``; :func:`build` turns that back into a module
with no further flags. ``input_shape`` and ``num_classes`` are part of every config, so a model never
needs its dataset to be rebuilt.

Families (seed studies in parentheses):

- ``mlp``: ``depth`` hidden layers of ``width`` units (seed 000: depth 1-10, width 48; seed 001:
  depth 1, widths 32/64/128).
- ``cnn``: seed 001's SimpleCNN: two 3x3 conv + 2x2 max-pool stages with ``width`` and ``2*width``
  channels, then a ``hidden``-unit fully connected layer (widths 16/32/64).
- ``resnet``: a small residual network with switches for skip connections and BatchNorm (seeds 003/004
  claim both smooth the landscape; the switches let a study test that).
- ``linear``: softmax regression, the convex baseline.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lscape_cli.errors import LscapeError
from lscape_cli.models.user import (
    USER_KINDS,
    UserModelConfig,
    build_user,
    config_from_dict,
    trusted_kind,
)
from lscape_cli.runtime import guard_onednn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class MLPConfig:
    """Fully connected ReLU network."""

    input_shape: tuple[int, ...] = (1, 28, 28)  # flattened at the input
    num_classes: int = 10
    depth: int = 1  # number of hidden layers
    width: int = 48  # units per hidden layer
    activation: str = "relu"
    bias: bool = True


@dataclass(frozen=True)
class CNNConfig:
    """Seed 001's SimpleCNN."""

    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    width: int = 32  # channels of the first conv; the second has 2*width
    hidden: int = 128  # units of the fully connected layer
    activation: str = "relu"
    bias: bool = True


@dataclass(frozen=True)
class ResNetConfig:
    """Small ResNet: a stem conv, ``stages`` stages of ``blocks`` basic blocks, global pool, linear head."""

    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    width: int = 16  # channels of the first stage; each later stage doubles them (stride 2)
    stages: int = 2
    blocks: int = 1  # basic blocks per stage
    skip: bool = True  # residual connections on/off
    batchnorm: bool = True  # BatchNorm after every conv on/off
    activation: str = "relu"


@dataclass(frozen=True)
class LinearConfig:
    """Softmax regression."""

    input_shape: tuple[int, ...] = (1, 28, 28)
    num_classes: int = 10
    bias: bool = True


RegistryConfig = MLPConfig | CNNConfig | ResNetConfig | LinearConfig
ModelConfig = RegistryConfig | UserModelConfig  # user and torchvision models carry a UserModelConfig


def _act(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise LscapeError(
            f"unknown activation {name!r}", "--activation", f"choose one of: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """``depth`` x (Linear, activation), then a Linear head."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        sizes = [math.prod(cfg.input_shape)] + [cfg.width] * cfg.depth
        self.hidden = nn.ModuleList(nn.Linear(a, b, bias=cfg.bias) for a, b in itertools.pairwise(sizes))
        self.act = _act(cfg.activation)
        self.head = nn.Linear(sizes[-1], cfg.num_classes, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, *input_shape) -> (N, classes)
        """Logits."""
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.act(layer(x))
        logits: torch.Tensor = self.head(x)
        return logits

    # forward(x) == forward_after_first(first(first_layer_input(x))), first = first_layer_name()'s module
    def first_layer_name(self) -> str:
        """The first module, linear in its weights (``core.landscape.surface`` factors it out of slices)."""
        return "hidden.0" if len(self.hidden) else "head"

    def first_layer_input(self, x: torch.Tensor) -> torch.Tensor:  # (N, *input_shape) -> (N, D)
        """What the first layer sees."""
        return x.flatten(1)

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:  # (N, width) -> (N, classes)
        """The rest of the forward pass from the first layer's output."""
        if not len(self.hidden):
            return z
        x = self.act(z)
        for layer in self.hidden[1:]:
            x = self.act(layer(x))
        out: torch.Tensor = self.head(x)
        return out


class SimpleCNN(nn.Module):
    """conv(w) - act - pool - conv(2w) - act - pool - fc(hidden) - act - fc(classes)."""

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        c, h, w = cfg.input_shape
        self.conv1 = nn.Conv2d(c, cfg.width, 3, padding=1, bias=cfg.bias)
        self.conv2 = nn.Conv2d(cfg.width, 2 * cfg.width, 3, padding=1, bias=cfg.bias)
        self.act = _act(cfg.activation)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * cfg.width * (h // 4) * (w // 4), cfg.hidden, bias=cfg.bias)
        self.fc2 = nn.Linear(cfg.hidden, cfg.num_classes, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        """Logits."""
        x = self.pool(self.act(self.conv1(x)))  # (N, w, H/2, W/2)
        x = self.pool(self.act(self.conv2(x)))  # (N, 2w, H/4, W/4)
        out: torch.Tensor = self.fc2(self.act(self.fc1(x.flatten(1))))
        return out

    def first_layer_name(self) -> str:
        """The first module, linear in its weights (see :meth:`MLP.first_layer_name`)."""
        return "conv1"

    def first_layer_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the first layer sees."""
        return x

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:  # (N, w, H, W) -> (N, classes)
        """The rest of the forward pass from the first layer's output."""
        x = self.pool(self.act(z))
        x = self.pool(self.act(self.conv2(x)))
        out: torch.Tensor = self.fc2(self.act(self.fc1(x.flatten(1))))
        return out


class BasicBlock(nn.Module):
    """conv-bn-act-conv-bn (+ skip) - act; the skip is a 1x1 conv when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: ResNetConfig) -> None:
        super().__init__()
        norm = (lambda ch: nn.BatchNorm2d(ch)) if cfg.batchnorm else (lambda ch: nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not cfg.batchnorm)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=not cfg.batchnorm)
        self.bn2 = norm(cout)
        self.act = _act(cfg.activation)
        self.skip = cfg.skip
        self.shortcut: nn.Module = nn.Identity()
        if cfg.skip and (stride != 1 or cin != cout):
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass."""
        out: torch.Tensor = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        if self.skip:
            out = out + self.shortcut(x)
        out = self.act(out)
        return out


class ResNet(nn.Module):
    """Stem, stages of basic blocks (channels double, resolution halves), global average pool, head."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        c = cfg.input_shape[0]
        self.stem = nn.Conv2d(c, cfg.width, 3, padding=1, bias=not cfg.batchnorm)
        self.stem_bn = nn.BatchNorm2d(cfg.width) if cfg.batchnorm else nn.Identity()
        self.act = _act(cfg.activation)
        blocks: list[nn.Module] = []
        cin = cfg.width
        for stage in range(cfg.stages):
            cout = cfg.width * 2**stage
            for b in range(cfg.blocks):
                blocks.append(BasicBlock(cin, cout, 2 if (stage > 0 and b == 0) else 1, cfg))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass."""
        x = self.blocks(self.act(self.stem_bn(self.stem(x))))
        out: torch.Tensor = self.head(x.mean(dim=(2, 3)))  # global average pool: (N, C, H, W) -> (N, C)
        return out

    def first_layer_name(self) -> str:
        """The stem conv; the BatchNorm after it is affine in eval mode, so it belongs to the rest."""
        return "stem"

    def first_layer_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the first layer sees."""
        return x

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:  # (N, width, H, W) -> (N, classes)
        """The rest of the forward pass from the first layer's output."""
        x = self.blocks(self.act(self.stem_bn(z)))
        out: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return out


class Linear(nn.Module):
    """Softmax regression (the loss applies the softmax)."""

    def __init__(self, cfg: LinearConfig) -> None:
        super().__init__()
        self.head = nn.Linear(math.prod(cfg.input_shape), cfg.num_classes, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward pass."""
        out: torch.Tensor = self.head(x.flatten(1))
        return out

    def first_layer_name(self) -> str:
        """The only layer (see :meth:`MLP.first_layer_name`)."""
        return "head"

    def first_layer_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the first layer sees."""
        return x.flatten(1)

    def forward_after_first(self, z: torch.Tensor) -> torch.Tensor:
        """Nothing follows the only layer."""
        return z


@dataclass(frozen=True)
class ModelEntry:
    """One registry row."""

    name: str
    config: type
    builder: Callable[..., nn.Module]
    description: str
    needs_image: bool  # needs (C, H, W) inputs


REGISTRY: dict[str, ModelEntry] = {
    "mlp": ModelEntry(
        "mlp", MLPConfig, MLP, "fully connected network (depth hidden layers of width units)", False
    ),
    "cnn": ModelEntry("cnn", CNNConfig, SimpleCNN, "SimpleCNN: two conv+pool stages and an FC layer", True),
    "resnet": ModelEntry("resnet", ResNetConfig, ResNet, "small ResNet with skip/BatchNorm switches", True),
    "linear": ModelEntry("linear", LinearConfig, Linear, "softmax regression (convex baseline)", False),
}


@dataclass(frozen=True)
class ModelSpec:
    """A registry name plus its config: what a checkpoint stores to rebuild the model.

    ``user`` and ``torchvision`` models carry a :class:`~lscape_cli.models.user.UserModelConfig` (their
    source, kwargs and file hash) instead of a registry config.
    """

    name: str
    config: ModelConfig

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form ``{"name": ..., "config": {...}}``."""
        cfg = dataclasses.asdict(self.config)
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = list(cfg["input_shape"])
        return {"name": self.name, "config": cfg}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model") -> ModelSpec:
        """Parse ``{"name", "config"}`` with errors that name the bad key."""
        name = data.get("name")
        if name in USER_KINDS:
            cfg = config_from_dict(dict(data.get("config") or {}), where)
            return cls(trusted_kind(str(name), cfg, where), cfg)
        if not isinstance(name, str) or name not in REGISTRY:
            raise LscapeError(f"unknown model {name!r}", where, f"known models: {', '.join(REGISTRY)}")
        return make_spec(name, dict(data.get("config") or {}), where=where)


def make_spec(name: str, options: dict[str, object], where: str = "--model") -> ModelSpec:
    """Build a :class:`ModelSpec`, checking option names and values."""
    if name not in REGISTRY:
        raise LscapeError(f"unknown model {name!r}", where, f"choose one of: {', '.join(REGISTRY)}")
    cfg_cls = REGISTRY[name].config
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise LscapeError(
            f"model {name!r} has no option(s) {', '.join(unknown)}",
            where,
            f"its options are: {', '.join(sorted(fields))}",
        )
    opts = dict(options)
    if "input_shape" in opts:
        shape = opts["input_shape"]
        if not isinstance(shape, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape
        ):
            raise LscapeError(
                f"invalid input_shape={json.dumps(shape)[:40]} for model {name!r}",
                where,
                "input_shape must be a list of positive integers, e.g. [1, 28, 28]",
            )
        opts["input_shape"] = tuple(shape)
    cfg: RegistryConfig = cfg_cls(**opts)
    _validate(name, cfg, where)
    return ModelSpec(name, cfg)


def _validate(name: str, cfg: RegistryConfig, where: str) -> None:
    for key in ("depth", "width", "hidden", "stages", "blocks", "num_classes"):
        value = getattr(cfg, key, 1)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not (0 if key == "depth" else 1) <= value < 2**53
        ):
            raise LscapeError(
                f"invalid {key}={value!r} for model {name!r}", where, f"{key} must be a positive integer"
            )
    if REGISTRY[name].needs_image and len(cfg.input_shape) != 3:
        raise LscapeError(
            f"model {name!r} needs image inputs (C, H, W)",
            where,
            "use an image dataset (digits, mnist-5k, mnist, ...) or the mlp/linear model",
        )
    for key in ("bias", "skip", "batchnorm"):
        if not isinstance(getattr(cfg, key, True), bool):
            raise LscapeError(
                f"invalid {key}={getattr(cfg, key)!r} for model {name!r}",
                where,
                f"{key} must be true or false",
            )
    if hasattr(cfg, "activation"):
        if not isinstance(cfg.activation, str):
            raise LscapeError(
                f"invalid activation={cfg.activation!r} for model {name!r}",
                where,
                "give its name as a string",
            )
        _act(cfg.activation)


def build(spec: ModelSpec) -> nn.Module:
    """Instantiate the module (framework-default initialisation, from torch's global RNG).

    torchvision builders are library code and build with no flags; a ``user`` model imports the user's
    code, which only :func:`lscape_cli.models.loading.load_model` does, when the user asks for it.
    """
    if isinstance(spec.config, UserModelConfig):
        if spec.name == "torchvision":
            return build_user(spec.config, [])
        raise LscapeError(
            f"the model was built from user code {spec.config.source}",
            "model",
            "pass --model-def to import it (or --trust-model-def to accept the recorded one)",
        )
    module = REGISTRY[spec.name].builder(spec.config)
    guard_onednn(module)
    return module


def num_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters())
