"""BERT4Rec (Sun et al., CIKM 2019) with RecBole's defaults.

A bidirectional post-LN encoder trained by cloze: 20% of each training window's items are replaced
by a mask token (id ``n_items + 1``) and predicted from both sides. A history is scored by putting
the mask token after its last item, so N - 1 items of history fit. Item embeddings are tied to the
scoring head.
"""
from __future__ import annotations

from compress.backbones.registry import register_backbone
from compress.backbones.transformer import SequenceTransformer, Style


@register_backbone("bert4rec")
class BERT4Rec(SequenceTransformer):
    """Bidirectional, post-LN, cloze-trained (Sun et al. 2019; RecBole defaults)."""
    default_style = Style(causal=False, objective="cloze")
