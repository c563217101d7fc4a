"""The algorithm: how scales, clipping ranges and integer codes are chosen.

Nothing here knows how bits lie on disk (:mod:`fastawq.format`) or how the product is computed
(:mod:`fastawq.kernels`).
"""
