"""The HVP's memory plan: chunk size and retained gradient graphs from measured bytes per sample.

Memory (:func:`plan`): one forward and gradient pass with ``create_graph=True`` on 2 and on 4 samples,
under :func:`torch.autograd.graph.saved_tensors_hooks`, measures the bytes per sample of the largest
tensor saved for backward and of all of them (the graph ``double_backward`` keeps per chunk). The chunk
size is then the smallest of ``max_batch``, the split, the memory budget over the graph bytes per sample,
and on CPU :data:`CPU_CHUNK_GRAPH_BYTES` (or more for large models, below) over the graph bytes per
sample. glibc serves large
allocations with fresh ``mmap`` pages (its threshold adapts up to 32 MiB) and gives the top of its heap
back to the kernel beyond a trim threshold (twice that), so when one chunk's product needs more
temporary memory than that, every product page-faults its activations in again. Measured on 4,000 MNIST
images, two threads, double_backward, seconds per product (minor faults per product): width-16
SimpleCNN (208 kB of graph per sample) 1.05 s (0.24 M) in chunks of 572 (each activation just under
30 MiB), 1.06 s (0.20 M) in 286, 0.73 s (1 k) in 143, 0.69 s (0) in 72; width-8 (104 kB) 1.14 s (0.61 M)
in one chunk, 0.6–0.7 s (0.1–0.2 M) in 1,000, 0.41 s (22 k) in 500, 0.35 s (0) in 250, 0.42 s (0) in
125. A 32 MiB graph per chunk (161 and 323 samples) lands on the fault-free side; the seed-000 MLP
(1.4 kB per sample) keeps its 4,000 samples in one chunk (10 ms per product; 11-12 ms in 2-4 chunks).
Every chunk also costs parameter-sized work (its weight gradients, summed into the product), which
dominates for large models: torchvision's ResNet-18 (11.2M parameters, 834 kB of graph per sample)
on 256 CIFAR-sized images, one thread, CPU seconds per product: 4.8-5.0 in 7 chunks of 37 (the
32 MiB cap), 4.3-4.4 in 2 of 128, 4.0-4.1 in one. So the CPU cap is the larger of 32 MiB and
:data:`CPU_CHUNK_PARAM_RATIO` times the parameters' bytes. Chunks are then
balanced (``ceil(N / ceil(N / cap))`` samples each). ``retain_chunks`` caps how many chunk graphs
``double_backward`` keeps between products: all when they fit in the budget, otherwise as many as fit
next to one rebuilt chunk; the others rebuild their gradient graph for every product (one forward +
backward more per product and chunk) and free it at once. ``None`` keeps all (fastest); ``0`` keeps
none (memory of one chunk).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import torch

if TYPE_CHECKING:
    from lscape_cli.core.objective import Objective

CPU_CHUNK_GRAPH_BYTES = 32 << 20  # CPU: one chunk's gradient graph (module docstring: page faults)
CPU_CHUNK_PARAM_RATIO = 8  # CPU: or this many times the parameters' bytes (per-chunk parameter work)
DEFAULT_MEMORY_BUDGET_MIB = 2048.0  # retained gradient graphs, CPU and other non-CUDA devices
CUDA_BUDGET_FRACTION = 0.5  # CUDA: default budget, this fraction of the free device memory


@dataclass(frozen=True)
class Footprint:
    """Bytes per sample of the tensors a chunk's gradient graph saves for backward (``create_graph=True``).

    Attributes:
        largest_tensor_bytes_per_sample: the largest single saved tensor (an activation or its derivative).
        graph_bytes_per_sample: all saved tensors together, the graph ``double_backward`` keeps per chunk.
    """

    largest_tensor_bytes_per_sample: int
    graph_bytes_per_sample: int


def footprint(obj: Objective) -> Footprint:
    """Measure :class:`Footprint` with one forward and gradient pass on 2 and one on 4 samples.

    The tensors saved for backward are recorded in saving order; the growth of each from 2 to 4 samples
    is its size per sample, so parameter-sized tensors count for nothing. Storages that exist already
    (data, parameters, buffers) are skipped, and a storage saved twice counts once. When the two passes
    save different sequences (or the split holds fewer samples), sizes are divided by the sample count.
    """
    n = int(obj.y.shape[0])
    small, large = min(2, n), min(4, n)
    sizes_large = _saved_storage_bytes(obj, large)
    sizes_small = _saved_storage_bytes(obj, small) if large > small else []
    if large > small and len(sizes_small) == len(sizes_large):
        step = large - small
        per = [math.ceil(max(0, b - a) / step) for a, b in zip(sizes_small, sizes_large, strict=True)]
    else:
        per = [math.ceil(b / large) for b in sizes_large]
    return Footprint(max(per, default=0), sum(per))


def _saved_storage_bytes(obj: Objective, count: int) -> list[int]:
    """Sizes of the new storages saved by one chunk's forward and ``create_graph`` backward, in order."""
    inputs = list(obj.x.values()) if isinstance(obj.x, Mapping) else [obj.x]  # named inputs: a Mapping
    existing = [
        t for t in (*inputs, obj.y, *obj.params.values(), *obj.buffers.values()) if torch.is_tensor(t)
    ]
    skip = {t.untyped_storage().data_ptr() for t in existing}
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and storage.nbytes() > 0:
            skip.add(ptr)
            sizes.append(storage.nbytes())
        return t

    leaves = {n: p.detach().requires_grad_(True) for n, p in obj.params.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = obj.chunk_loss(leaves, obj.x[:count], obj.y[:count])
        torch.autograd.grad(value, list(leaves.values()), create_graph=True, allow_unused=True)
    return sizes


class PlanDict(TypedDict):
    """:meth:`Plan.to_dict`: the chunking part of a probe record's ``hvp`` entry."""

    chunk_size: int
    num_chunks: int
    retain_chunks: int
    memory_budget_mib: float
    graph_bytes_per_sample: int
    largest_tensor_bytes_per_sample: int
    limited_by: str
    retained_graph_bytes: int


@dataclass(frozen=True)
class Plan:
    """How an objective's data is chunked, and how many chunk graphs ``double_backward`` keeps.

    Attributes:
        chunk_size: samples per chunk (the objective's new ``max_batch``).
        num_chunks: chunks of this process's data.
        retain_chunks: chunk graphs kept between products; the rest are rebuilt per product.
        memory_budget_mib: the budget for kept graphs (MiB).
        graph_bytes_per_sample, largest_tensor_bytes_per_sample: the measured :class:`Footprint`.
        limited_by: what set the chunk size: ``split`` (all in one chunk), ``max_batch``,
            ``cpu_chunk`` (:data:`CPU_CHUNK_GRAPH_BYTES`) or ``memory_budget``.
    """

    chunk_size: int
    num_chunks: int
    retain_chunks: int
    memory_budget_mib: float
    graph_bytes_per_sample: int
    largest_tensor_bytes_per_sample: int
    limited_by: str

    def apply(self, obj: Objective) -> Objective:
        """``obj`` evaluated in chunks of :attr:`chunk_size` (same loss, same derivatives)."""
        return dataclasses.replace(obj, max_batch=self.chunk_size)

    @property
    def retained_graph_bytes(self) -> int:
        """Estimated bytes of the kept chunk graphs (measured bytes per sample x samples kept)."""
        return self.retain_chunks * self.chunk_size * self.graph_bytes_per_sample

    def to_dict(self) -> PlanDict:
        """Plain values for records (the fields, then ``retained_graph_bytes``)."""
        return {
            "chunk_size": self.chunk_size,
            "num_chunks": self.num_chunks,
            "retain_chunks": self.retain_chunks,
            "memory_budget_mib": self.memory_budget_mib,
            "graph_bytes_per_sample": self.graph_bytes_per_sample,
            "largest_tensor_bytes_per_sample": self.largest_tensor_bytes_per_sample,
            "limited_by": self.limited_by,
            "retained_graph_bytes": self.retained_graph_bytes,
        }


def default_memory_budget_mib(device: torch.device) -> float:
    """:data:`DEFAULT_MEMORY_BUDGET_MIB`, or on CUDA :data:`CUDA_BUDGET_FRACTION` of the free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return CUDA_BUDGET_FRACTION * free / 2**20
    return DEFAULT_MEMORY_BUDGET_MIB


def plan(obj: Objective, memory_budget_mib: float | None = None, retain_chunks: int | None = None) -> Plan:
    """Chunk size and retained graphs for ``obj`` from its measured :func:`footprint`.

    Args:
        obj: the objective; its ``max_batch`` is an upper bound on the chunk size.
        memory_budget_mib: bytes (MiB) the kept gradient graphs may take; ``None``:
            :func:`default_memory_budget_mib`. A chunk's graph must fit in it, which also bounds the chunk.
        retain_chunks: overrides the number of kept graphs (``0``: rebuild every chunk per product).
    """
    budget = default_memory_budget_mib(obj.x.device) if memory_budget_mib is None else memory_budget_mib
    if not budget > 0 or (retain_chunks is not None and retain_chunks < 0):
        raise ValueError(
            f"memory_budget_mib must be > 0 and retain_chunks >= 0, got {budget}, {retain_chunks}"
        )
    fp = footprint(obj)
    n = int(obj.y.shape[0])
    budget_bytes = int(budget * 2**20)
    caps = {"split": n, "max_batch": obj.max_batch}
    if obj.x.device.type == "cpu" and fp.graph_bytes_per_sample > 0:
        param_bytes = sum(p.numel() * p.element_size() for p in obj.params.values())
        cpu_chunk = max(CPU_CHUNK_GRAPH_BYTES, CPU_CHUNK_PARAM_RATIO * param_bytes)
        caps["cpu_chunk"] = cpu_chunk // fp.graph_bytes_per_sample
    if fp.graph_bytes_per_sample > 0:
        caps["memory_budget"] = budget_bytes // fp.graph_bytes_per_sample
    limited_by = min(caps, key=lambda k: caps[k])  # the first of equal caps: "split" before the others
    num_chunks = math.ceil(n / max(1, caps[limited_by]))
    chunk = math.ceil(n / num_chunks)  # balanced: no small remainder chunk
    graph = chunk * fp.graph_bytes_per_sample
    if retain_chunks is not None:
        retain = min(retain_chunks, num_chunks)
    elif num_chunks * graph <= budget_bytes:
        retain = num_chunks
    else:  # leave room for the chunk being rebuilt
        retain = max(0, budget_bytes // max(graph, 1) - 1)
    return Plan(
        chunk,
        num_chunks,
        retain,
        budget,
        fp.graph_bytes_per_sample,
        fp.largest_tensor_bytes_per_sample,
        limited_by,
    )
