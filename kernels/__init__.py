"""Multi-tensor kernels for clipped optimizers: global norm, clip factors, fused clipped SGD and Scion steps.

Every function takes Python lists of tensors, never synchronises the host, and dispatches on
``backend="auto" | "triton" | "torch"`` (auto: Triton on CUDA, the torch reference elsewhere).
See docs/kernels.md.
"""
from .chunk_table import ChunkPlans
from .clip_factor import CLIP_RULES, clip_factor
from .clipped_update import WEIGHT_DECAY_MODES, clipped_sgd_update_
from .dispatch import BACKENDS
from .global_norm import global_norm
from .lerp_momentum import lerp_momentum_
from .scion_inner_product import scion_inner_product
from .scion_update import scion_update_

__all__ = [
    "BACKENDS", "CLIP_RULES", "ChunkPlans", "WEIGHT_DECAY_MODES", "clip_factor", "clipped_sgd_update_", "global_norm",
    "lerp_momentum_", "scion_inner_product", "scion_update_",
]
