"""SASRec (Kang & McAuley, ICDM 2018) with RecBole's semantics and defaults.

Post-LN layers, GELU, LayerNorm eps 1e-12, N(0, 0.02) init, item embeddings tied to the scoring
head, CE over all items. Sequences are right-padded with 0 (RecBole's layout): position p is the
p-th item of the (truncated) history and the prediction is read at the last real item. Training
uses every position at once under the causal mask, which yields each prefix's next-item loss in
one pass.
"""
from __future__ import annotations

from compress.backbones.registry import register_backbone
from compress.backbones.transformer import SequenceTransformer, Style


@register_backbone("sasrec")
class SASRec(SequenceTransformer):
    """Causal, post-LN, next-item (Kang & McAuley 2018; RecBole defaults)."""
    default_style = Style()
