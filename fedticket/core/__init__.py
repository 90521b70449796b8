"""fedticket's mask and pruning core: torch and numpy only.

Read this package alone to understand every mask in the project:

* :mod:`~fedticket.core.mask`       the Mask (name -> bool tensor), reports, safe files, bits
* :mod:`~fedticket.core.selection`  which tensors are prunable (by name and shape)
* :mod:`~fedticket.core.apply`      zeroing and keeping zero through optimizer steps
* :mod:`~fedticket.core.scorers`    random, magnitude, SNIP, GraSP, SynFlow
* :mod:`~fedticket.core.prune`      scores -> exact-count Mask, one-shot or iterative; ℓ0 projection
* :mod:`~fedticket.core.imp`        iterative magnitude pruning with rewinding
* :mod:`~fedticket.core.nm`         N:M semi-structured masks from any scorer
* :mod:`~fedticket.core.essential`  essential sparsity: one-shot sweep of a trained model, sharp drop
* :mod:`~fedticket.core.granet`     GraNet: gradual pruning with zero-cost neuroregeneration
* :mod:`~fedticket.core.pqi`        PQ Index and sparsity-informed adaptive pruning (SAP)
* :mod:`~fedticket.core.bip`        BiP: first-order bi-level pruning
* :mod:`~fedticket.core.supermask`  sign / binary / Bernoulli supermasks with a straight-through estimator
* :mod:`~fedticket.core.codec`      bit packing and the wire header
"""

from fedticket.core.apply import MaskEnforcer, apply_mask
from fedticket.core.bip import BiPResult, bip_prune
from fedticket.core.codec import (
    HEADER_BYTES,
    bits_to_signs,
    decode_bits,
    encode_bits,
    pack_bits,
    packed_size,
    signs_to_bits,
    unpack_bits,
)
from fedticket.core.essential import essential_sparsity, sharp_drop_point
from fedticket.core.granet import GraNet
from fedticket.core.imp import IMPLevel, iterative_magnitude_pruning, rewind_weights
from fedticket.core.mask import Mask
from fedticket.core.nm import is_nm, nm_mask_from_scores, parse_nm
from fedticket.core.pqi import pq_index, pq_report, sap_prune_count, sap_prune_fraction
from fedticket.core.prune import (
    density_schedule,
    kept_count,
    l0_project,
    mask_from_scores,
    prune,
    topk_mask_flat,
)
from fedticket.core.scorers import METHODS, score
from fedticket.core.selection import is_prunable, prunable_parameters
from fedticket.core.supermask import SupermaskNet

__all__ = [
    "Mask", "prunable_parameters", "is_prunable", "apply_mask", "MaskEnforcer", "score", "METHODS",
    "prune", "mask_from_scores", "l0_project", "kept_count", "density_schedule", "topk_mask_flat",
    "iterative_magnitude_pruning", "IMPLevel", "rewind_weights", "SupermaskNet", "pack_bits",
    "unpack_bits", "packed_size", "encode_bits", "decode_bits", "HEADER_BYTES", "signs_to_bits",
    "bits_to_signs", "nm_mask_from_scores", "is_nm", "parse_nm", "essential_sparsity",
    "sharp_drop_point", "GraNet", "pq_index", "pq_report", "sap_prune_count", "sap_prune_fraction",
    "bip_prune", "BiPResult",
]
