"""oneDNN stays on, and the one convolution class whose weight gradient corrupts the heap is guarded.

The crash aborts the process, so the cases run in subprocesses: with torch 2.14.1 on this AVX2 CPU,
each of them aborted ("corrupted double-linked list") before the guard (lscape_cli.runtime).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from lscape_cli.models import ModelSpec, ResNetConfig, build
from lscape_cli.runtime import guard_onednn, needs_onednn_guard

# The failing case, reduced: the 4 -> 8 channel stride-2 shortcut of a width-4 ResNet, channels-last
# input, weight gradient, compared with torch's native kernel each time.
CONV_CASE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from lscape_cli.runtime import guard_onednn

    assert torch.backends.mkldnn.enabled
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    assert guard_onednn(conv) == 1
    x = torch.randn(128, 4, 8, 8).to(memory_format=torch.channels_last)
    go = torch.randn(128, 8, 4, 4)
    with torch.backends.mkldnn.flags(enabled=False):
        ref = torch.autograd.grad(conv(x), conv.weight, go)[0]
    for _ in range(30):
        got = torch.autograd.grad(conv(x), conv.weight, go)[0]
        junk = [torch.empty(1000) for _ in range(20)]  # allocations that meet a corrupted heap
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4)
    print("ok")
    """
)


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_guarded_conv_weight_gradient_survives_with_onednn() -> None:
    done = _python("-c", CONV_CASE)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow  # the whole original command in a subprocess; the reduced case above runs in CI
def test_width4_batchnorm_resnet_trains_one_epoch_with_onednn(tmp_path: Path) -> None:
    """The original crash: ``lscape train --model resnet --width 4 --dataset digits --epochs 1``."""
    argv = ["--model", "resnet", "--width", "4", "--dataset", "digits", "--epochs", "1"]
    done = _python("-m", "lscape_cli", "train", *argv, "--out", str(tmp_path), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("conv", "guarded"),
    [
        (nn.Conv2d(4, 8, 1, stride=2, bias=False), True),
        (nn.Conv2d(7, 8, 1, stride=3), True),
        (nn.Conv2d(16, 32, 1, stride=2, groups=4), True),  # 4 input channels per group
        (nn.Conv2d(8, 16, 1, stride=2), False),
        (nn.Conv2d(4, 8, 1, stride=1), False),
        (nn.Conv2d(4, 8, 3, stride=2), False),
        (nn.Conv3d(4, 8, 1, stride=2), False),
    ],
)
def test_shape_rule(conv: nn.Module, guarded: bool) -> None:
    assert needs_onednn_guard(conv) is guarded


def test_models_are_built_guarded_and_unchanged() -> None:
    """The registry ResNet's narrow shortcut is guarded, ResNet-18's wide ones are not; outputs agree."""
    small = build(ModelSpec("resnet", ResNetConfig(input_shape=(1, 8, 8), width=4)))
    shortcut = small.blocks[1].shortcut[0]
    assert "forward" in vars(shortcut) and sum("forward" in vars(m) for m in small.modules()) == 1
    assert guard_onednn(torchvision.models.resnet18(num_classes=10)) == 0
    torch.manual_seed(0)
    x = torch.randn(6, 4, 8, 8).to(memory_format=torch.channels_last)
    plain = nn.Conv2d(4, 8, 1, stride=2)
    guarded = nn.Conv2d(4, 8, 1, stride=2)
    guarded.load_state_dict(plain.state_dict())
    guard_onednn(guarded)
    with torch.backends.mkldnn.flags(enabled=False):
        native = plain(x)
    assert torch.allclose(guarded(x), native, rtol=1e-5, atol=1e-6)  # the same numbers, layout aside
