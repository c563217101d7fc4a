"""Architectures as data: where the decoder layers are and which ops scale which linears.

Scaling groups are *discovered* from each decoder layer by running it (see :mod:`.discover`);
:mod:`.overrides` holds the short table of per-architecture exceptions.
"""

from fastawq.arch.discover import LayerPlan, ScalingGroup, discover_layer, find_decoder_layers
from fastawq.arch.overrides import ArchSpec, arch_spec

__all__ = ["ArchSpec", "LayerPlan", "ScalingGroup", "arch_spec", "discover_layer", "find_decoder_layers"]
