"""The model card people read (MODEL_DIR/README.md) says what card.json says."""
from __future__ import annotations

from compress.arch import ArchSpec
from compress.store.card import render

ARCH = ArchSpec(64, 256, 4, 1)
INPUT = ArchSpec(128, 256, 4, 2, attention="linear", gate_layers=2)


def card(**extra) -> dict:
    return {"arch": ARCH.to_dict(), "model": {"backbone": "sasrec", "n_items": 3381, "max_len": 50},
            "flops": {"analytic": {"total": 2_500_000, "matmul": 2_400_000}, "measured": 2_400_000},
            "params": 250_000, "latency_ms": {"cpu_batch_1": 0.84},
            "versions": {"compress": "0.1.0", "torch": "2.13.0", "python": "3.11.7", "processes": 1}, **extra}


FULL = card(command="compress export runs/x --out models/x", source="/runs/x", kind="search",
            search={"best_epoch": 3},
            input={"label": INPUT.label(), "flops": {"total": 10_000_000, "matmul": 9_600_000}, "params": 1_000_000},
            metrics={"valid/full": {"ndcg@10": 0.12, "recall@10": 0.2, "mrr@10": 0.09, "eval_seconds": 1.0},
                     "test/full": {"ndcg@10": 0.11, "recall@10": 0.19, "mrr@10": 0.08}},
            dataset={"users": 960, "items": 3381, "interactions": 91710, "numbering": "recbole"},
            data={"data": "ml-1m"}, format="onnx",
            native={"adapter": "hf-gpt2", "path": "native", "note": None})


def test_decision_costs_against_the_input_model():
    text = render(FULL)
    assert text.startswith("# 64/256 × 1 layer\n")
    assert "| this model (64/256 × 1 layer) | input model (128/256 × 2 layers, linear attention, gates L_d=2) |" in text
    assert "| FLOPs (analytic, total) | 2.5 M | 10 M (4.00x) |" in text
    assert "| parameters | 250,000 | 1,000,000 (4.00x) |" in text
    assert "0.84 ms" in text and "N = 50" in text


def test_metrics_test_first_named_as_people_write_them():
    text = render(FULL)
    assert "| split / protocol | NDCG@10 | Recall@10 | MRR@10 |" in text and "eval_seconds" not in text
    assert text.index("| test / full | 0.1100 | 0.1900 | 0.0800 |") < text.index("| valid / full | 0.1200 |")


def test_data_provenance_and_loading():
    text = render(FULL)
    assert "Trained on **ml-1m**: 960 users, 3,381 items, 91,710 interactions." in text
    assert "numbered as recbole numbers them" in text
    assert "Made by `compress export runs/x --out models/x`, from the search run `/runs/x`" in text
    assert "epoch 3" in text and "compress 0.1.0" in text
    assert text.index('compress.load("MODEL_DIR")') < text.index("GPT2Model.from_pretrained")
    assert "model.onnx" in text and "fixed at N" in text and "MODEL_DIR format" in text


def test_a_search_decided_at_its_last_epoch_names_that_epoch():
    text = render({**FULL, "search": {"best_epoch": 3, "decision_epoch": 7}})
    assert "the search's decision is that of epoch 7" in text


def test_native_card_puts_its_class_first():
    text = render(FULL, native=True)
    assert text.startswith("# 64/256 × 1 layer as transformers.GPT2Model\n")
    assert text.index("GPT2Model.from_pretrained") < text.index('compress.load("MODEL_DIR")')
    assert "items.json" in text


def test_a_bare_card_from_python_renders():
    text = render(card(command=None))
    assert "Python API" in text and "No metrics were recorded" in text
    assert "input model" not in text and "## Data" not in text


def test_data_read_onto_a_models_vocabulary_says_so():
    text = render(card(dataset={"users": 9, "items": 5, "interactions": 40, "numbering": "compress", "aligned": True,
                                "dropped_interactions": 3}))
    assert "numbered as the wrapped model numbered them" in text and "3 interactions" in text
    assert "as compress numbers them" not in text
