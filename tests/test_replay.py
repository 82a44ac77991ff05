"""Replay at fixed shapes (compress/runtime/replay.py), the CUDA-graph path of serving and bench,
guarded on a CPU: a stand-in graph API that records captures and replays the captured function on
the captured buffers checks the bookkeeping real CUDA graphs rely on (one capture per shape, inputs
copied into the captured buffer, outputs read from the captured buffer and cloned)."""
from __future__ import annotations

import torch

import compress
from compress.runtime.replay import Replayed


class RecordedGraphs:
    """A CUDA graph stand-in: "capturing" runs ``fn`` once on the static input, "replaying" reruns it on
    the same static input and writes into the same static output, as a graph replay does."""

    def __init__(self) -> None:
        self.captures = []

    def capture(self, fn, static_in):
        self.captures.append(tuple(static_in.shape))
        static_out = fn(static_in)
        return static_out, lambda: static_out.copy_(fn(static_in))


def model_and_data():
    data = compress.load_dataset()
    torch.manual_seed(0)
    model = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 2, 2, "linear", 1), data.n_items, 20).eval()
    model.vocabulary = data.vocabulary()
    return model, data


def test_one_capture_per_shape_and_the_eager_scores():
    model, data = model_and_data()
    graphs = RecordedGraphs()
    replayed = Replayed(model.predict, torch.device("cpu"), graphs)
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 4, 1, 4, 4):
        items = torch.randint(1, data.n_items + 1, (batch, 20), generator=gen)
        items[0, 10:] = 0
        with torch.no_grad():
            assert torch.equal(replayed(items), model.predict(items))
    assert graphs.captures == [(1, 20), (4, 20)]


def test_the_result_is_not_overwritten_by_the_next_replay():
    model, data = model_and_data()
    replayed = Replayed(model.predict, torch.device("cpu"), RecordedGraphs())
    a = replayed(torch.full((2, 20), 3))
    first = a.clone()
    replayed(torch.full((2, 20), 5))
    assert torch.equal(a, first)


def test_without_cuda_the_function_is_called_as_it_is():
    model, data = model_and_data()
    replayed = Replayed(model.predict, torch.device("cpu"))
    assert replayed.graphs is None
    items = torch.randint(1, data.n_items + 1, (3, 20))
    with torch.no_grad():
        assert torch.equal(replayed(items), model.predict(items))


def test_the_recommender_buckets_batches_and_keeps_its_answers():
    """Serving pads a batch to a power of two (empty histories) for a bounded number of captures; the
    recommendations are those of the unpadded eager call."""
    model, data = model_and_data()
    eager = compress.Recommender(model, graphs=False)
    served = compress.Recommender(model)
    served.predict = Replayed(model.predict, torch.device("cpu"), RecordedGraphs())
    histories = [data.item_tokens[j:j + 5] for j in range(3)]
    assert served.recommend(histories, k=5) == eager.recommend(histories, k=5)
    assert served.predict.graphs.captures == [(4, 20)]  # 3 histories -> the bucket of 4
