"""Sliceable building blocks shared by the dense backbones and the supernet.

Every module holds full-size weights and takes an optional ``Width``: computing with the leading
``hidden``/``inner`` slices of the weights is exactly the paper's zero-mask (trailing dimensions
set to zero) without multiplying by zeros.
"""
