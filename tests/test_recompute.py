"""Recomputing each width's layer in the backward pass (``recompute``): the same gradients and the same
search, bit for bit, with fewer activations kept."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic import walking_dataset

from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.nas.config import SearchConfig
from compress.nas.search import search
from compress.nas.space import SearchSpace
from compress.nas.wrap import wrap

N_ITEMS, MAX_LEN = 40, 16


def supernet(dataset_items: int = N_ITEMS):
    """d=24, D=48, 2 layers with dropout 0.2: every width, attention kind and gate depth searched."""
    torch.manual_seed(0)
    backbone = SASRec(ArchSpec(hidden=24, inner=48, heads=3, layers=2), dataset_items, MAX_LEN, dropout=0.2)
    return wrap(backbone, space=SearchSpace((0.0, 1 / 3, 2 / 3), (0.0, 1 / 3, 2 / 3)))


def soft_step(sn, recompute: bool):
    """One soft training step's loss, gradients (weights and controllers) and saved-activation bytes."""
    sn.train()
    sn.recompute = recompute
    sn.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, N_ITEMS + 1, (8, MAX_LEN), generator=gen)
    targets = torch.randint(1, N_ITEMS + 1, (8,), generator=gen)
    weights = [torch.softmax(c.logits / 0.5 + torch.randn(c.logits.shape, generator=gen), 0) for c in sn.controllers]
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(7)  # dropout's masks
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(sn.predict(items, *weights), targets)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in sn.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved[0]


def test_recomputed_widths_give_the_same_gradients_bit_for_bit_and_keep_less():
    sn = supernet()
    assert len(sn.widths) == 3 and len(sn.kinds) == 2 and len(sn.gate_depths) == 3
    loss, grads, kept = soft_step(sn, recompute=False)
    loss_r, grads_r, kept_r = soft_step(sn, recompute=True)
    assert torch.equal(loss, loss_r)
    assert grads.keys() == grads_r.keys() and any("logits" in n for n in grads)  # controllers learn through it
    assert all(torch.equal(grads[n], grads_r[n]) for n in grads)  # dropout drew the same masks again
    assert kept_r < kept / 2


def test_recompute_is_off_outside_training_gradients():
    sn = supernet().eval()
    sn.recompute = True
    items = torch.randint(1, N_ITEMS + 1, (4, MAX_LEN))
    with torch.no_grad():
        scores = sn.predict(items)
    sn.recompute = False
    with torch.no_grad():
        assert torch.equal(scores, sn.predict(items))


@pytest.fixture(scope="module")
def dataset():
    return walking_dataset(n_users=120, n_items=N_ITEMS, max_len=MAX_LEN, seed=3)


def test_a_recomputing_search_is_the_same_search(dataset):
    cfg = dict(epochs=2, batch_size=32, seed=0, tradeoff=1.0)
    plain = search(supernet(dataset.n_items), dataset, SearchConfig(**cfg), device="cpu")
    recomputed = search(supernet(dataset.n_items), dataset, SearchConfig(**cfg, recompute=True), device="cpu")
    assert recomputed.decision == plain.decision
    strip = ("seqs_per_s", "train_seconds", "valid_eval_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in recomputed.history] == \
        [{k: v for k, v in r.items() if k not in strip} for r in plain.history]
    assert all(torch.equal(a, b) for a, b in zip(recomputed.supernet.state_dict().values(),
                                                 plain.supernet.state_dict().values()))
    assert recomputed.card()["options"]["recompute"] is True
