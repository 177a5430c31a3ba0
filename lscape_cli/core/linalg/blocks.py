"""Parameter blocks: curvature restricted to some of the parameters, and the per-layer split.

For a block ``B`` of the parameters (a set of named tensors), the block's curvature is the principal
sub-matrix ``M_BB`` of the full one: the second derivatives with respect to the block's parameters, the
others held fixed at ``θ``. :func:`restrict` builds the objective whose parameters are the block's and
whose other parameters travel as constants next to the buffers, so every operator and estimator works on
``M_BB`` directly and a product differentiates only with respect to the block.

By Cauchy's interlacing theorem the eigenvalues of a principal sub-matrix lie within the full matrix's
range: ``λmin(M) ≤ λmin(M_BB) ≤ λmax(M_BB) ≤ λmax(M)``. The blocks of a partition have traces that add up
to the full trace (``tr M = Σ_B tr M_BB``); their Frobenius norms do not (off-diagonal blocks are left
out).

:func:`layers` groups the parameter tensors by the module that owns them (``hidden.0.weight`` and
``hidden.0.bias`` form the block ``hidden.0``), in the model's parameter order. :func:`module_blocks`
knows transformers: an attention module (``nn.MultiheadAttention``, or a module named ``*attn*`` /
``*attention*``) is one block with everything inside it (query/key/value and output projections), an MLP
(a module named ``mlp``/``ffn``/``feed_forward``, or ``linear1`` + ``linear2`` of an
``nn.TransformerEncoderLayer``/``DecoderLayer``, named ``<layer>.mlp``) is one block, and the rest
(embeddings, norms, the head) keeps its owning module, so a transformer's table reads embedding, then
per layer attention, MLP and norms, then the head.
"""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from lscape_cli.core.linalg.hvp import Objective, Params


def select(params: Params, patterns: tuple[str, ...]) -> list[str]:
    """Names of the parameters that match any of the regular expressions (full match), in model order.

    Raises:
        ValueError: a pattern is not a valid regular expression, or matches no parameter.
    """
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
    for pattern, rx in zip(patterns, compiled, strict=True):
        if not any(rx.fullmatch(name) for name in params):
            raise ValueError(f"{pattern!r} matches no parameter; the parameters are: {', '.join(params)}")
    return [name for name in params if any(rx.fullmatch(name) for rx in compiled)]


def restrict(obj: Objective, names: list[str]) -> Objective:
    """``obj`` as a function of the named parameters only; the others become constants at ``θ``."""
    missing = [n for n in names if n not in obj.params]
    if missing or not names:
        raise ValueError(f"no such parameters: {missing}" if missing else "a block needs a parameter")
    block = {n: t for n, t in obj.params.items() if n in names}
    fixed = {n: t for n, t in obj.params.items() if n not in names}
    return dataclasses.replace(obj, params=block, buffers={**obj.buffers, **fixed})


def layers(names: list[str]) -> dict[str, list[str]]:
    """Parameter names grouped by owning module (``a.b.weight`` -> ``a.b``), in first-appearance order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        owner = name.rpartition(".")[0] or name
        groups.setdefault(owner, []).append(name)
    return groups


_ATTENTION = re.compile(r".*(attn|attention).*", re.IGNORECASE)
_MLP = re.compile(r"(mlp|ffn|ff|feed_?forward)\d*", re.IGNORECASE)
_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def _group_of(model: nn.Module, name: str) -> str:
    """The block of parameter ``name`` (module docstring), from its module path."""
    parts = name.split(".")[:-1]
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        module = model.get_submodule(prefix)
        last = parts[i - 1]
        if isinstance(module, nn.MultiheadAttention) or _ATTENTION.fullmatch(last) or _MLP.fullmatch(last):
            return prefix
        if isinstance(module, _LAYERS) and i < len(parts) and parts[i] in ("linear1", "linear2"):
            return f"{prefix}.mlp"
    return name.rpartition(".")[0] or name


def module_blocks(model: nn.Module, names: list[str]) -> dict[str, list[str]]:
    """Parameter names grouped into transformer-aware blocks (module docstring), in model order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(_group_of(model, name), []).append(name)
    return groups


def embed(block: Params, like: Params) -> Params:
    """A block vector as a full parameter-space vector: zero outside the block."""
    return {n: block[n] if n in block else t.new_zeros(t.shape) for n, t in like.items()}
