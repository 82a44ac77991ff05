"""Bad numbers and objects given from Python, where no command line checks them first: each ends in a
typed error naming the value, before any data is read or any step is taken. A sequence length of 0
once looped forever building training windows (until the machine ran out of memory), a NaN λ or
budget searched on, and a NaN model reached its first step only to blame the learning rate."""
from __future__ import annotations

import json

import pytest
import torch

import compress
from compress.data.vocabulary import ItemVocabulary
from compress.errors import ConfigError

ARCH = compress.ArchSpec(hidden=16, inner=32, heads=2, layers=1)


@pytest.fixture(scope="module")
def data(tiny_data_file):
    return compress.load_dataset(str(tiny_data_file))


def sasrec(n_items: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return compress.get_backbone("sasrec")(ARCH, n_items, **{"max_len": 10, **kwargs})


@pytest.mark.parametrize("kwargs, words", [
    (dict(lr=float("inf")), r"lr must be a finite number in \(0, 10\], got inf"),
    (dict(lr=0.0), r"lr must be a finite number in \(0, 10\], got 0.0"),
    (dict(weight_decay=float("nan")), r"weight_decay must be a finite number in \[0, 1\], got nan"),
    (dict(weight_decay=-0.1), r"weight_decay must be a finite number in \[0, 1\]"),
    (dict(max_minutes=0), "max_minutes must be a finite number > 0, got 0"),
    (dict(max_minutes=float("inf")), "max_minutes must be a finite number > 0"),
    (dict(epochs=2.5), "epochs must be a whole number, got 2.5"),
    (dict(batch_size=True), "batch_size must be a whole number, got True"),
    (dict(seed=-1), r"seed must be in \[0, 2147483647\], got -1"),
    (dict(seed=2 ** 70), r"seed must be in \[0, 2147483647\], got 1180591620717411303424"),  # fit overflowed
    (dict(negatives=0, loss="uniform"), r"negatives must be in \[1, 1000000\], got 0"),
    (dict(distill=float("nan")), r"distill must be a finite number in \[0, 1\], got nan"),
    (dict(distill_temperature="2"), r"distill_temperature must be a finite number in \(0, 100\], got '2'"),
])
def test_bad_training_configs_name_the_value(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        compress.TrainConfig(**kwargs)


def test_numpy_numbers_are_numbers():
    import numpy as np

    cfg = compress.TrainConfig(epochs=np.int64(3), lr=np.float32(0.5))
    assert cfg.epochs == 3 and cfg.lr == 0.5


@pytest.mark.parametrize("kwargs, words", [
    (dict(max_len=0), "max_len must be >= 1, got 0"),
    (dict(max_len=-5), "max_len must be >= 1, got -5"),
    (dict(max_len=2.5), "max_len must be a whole number, got 2.5"),
    (dict(dropout=1.0), r"dropout must be a finite number in \[0, 1\), got 1.0"),
    (dict(dropout=float("nan")), "dropout must be a finite number"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps must be a finite number > 0"),
    (dict(init_std=float("inf")), "init_std must be a finite number > 0"),
])
def test_bad_model_sizes_are_refused_when_the_model_is_built(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        sasrec(30, **kwargs)


@pytest.mark.parametrize("n_items, words", [(0, "n_items must be >= 1, got 0"),
                                            (30.0, "n_items must be a whole number, got 30.0")])
def test_bad_item_counts_are_refused(n_items, words):
    with pytest.raises(ConfigError, match=words):
        sasrec(n_items)


def test_an_arch_that_is_not_an_archspec_is_refused():
    with pytest.raises(ConfigError, match="arch must be a compress.ArchSpec, got dict"):
        compress.get_backbone("sasrec")(dict(hidden=16, inner=32, heads=2, layers=1), 30, max_len=10)


def test_a_saved_config_with_a_zero_sequence_length_is_refused_on_load(artifacts, tmp_path):
    import json
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(artifacts["model"], model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["model"]["max_len"] = 0
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(compress.CompressError, match="max_len"):
        compress.load(str(model_dir))


@pytest.mark.parametrize("kwargs, words", [
    (dict(round_to=float("nan")), "round_to must be a whole number, got nan"),
    (dict(round_to=2.5), "round_to must be a whole number, got 2.5"),
    (dict(hidden_ratios=0.5), r"hidden_ratios must be a tuple of pruning ratios like \(0.0, 0.5\), got 0.5"),
    (dict(inner_ratios=("0.5",)), "pruning ratio '0.5' is outside"),
    (dict(hidden_ratios=(float("nan"),)), "pruning ratio nan is outside"),
])
def test_bad_search_spaces_name_the_value(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        compress.SearchSpace(**kwargs)


@pytest.mark.parametrize("thing", [5, "sasrec", None])
def test_wrapping_what_is_not_a_module_is_refused(thing):
    with pytest.raises(ConfigError, match=f"the model must be a torch.nn.Module, got {type(thing).__name__}"):
        compress.wrap(thing)


def inf_model(n_items: int) -> torch.nn.Module:
    model = sasrec(n_items)
    with torch.no_grad():
        model.position_embedding.weight[1, 2] = float("inf")
    return model


def test_a_model_with_nan_or_inf_weights_is_refused_by_wrap_and_fit(data):
    model = inf_model(data.n_items)
    with pytest.raises(ConfigError, match=r"the model holds NaN or inf in position_embedding.weight.*fresh model"):
        compress.wrap(model)
    with pytest.raises(ConfigError, match="the model holds NaN or inf in position_embedding.weight"):
        compress.fit(model, data, compress.TrainConfig(epochs=1), "cpu")
    with pytest.raises(ConfigError, match="the teacher holds NaN or inf"):
        compress.fit(sasrec(data.n_items), data, compress.TrainConfig(epochs=1, distill=0.5), "cpu", teacher=model)


def test_the_refusal_names_how_many_weights_are_bad(data):
    model = sasrec(data.n_items)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    n = len(list(model.parameters()))
    with pytest.raises(ConfigError, match=rf"in item_embedding.weight \(and {n - 1} more\)"):
        compress.wrap(model)


@pytest.mark.parametrize("call, words", [
    (lambda: compress.training_windows([torch.arange(1, 9).numpy()], 0), "max_len must be >= 1, got 0"),
    (lambda: compress.pad_right([torch.arange(1, 9).numpy()], -3), "length must be >= 1, got -3"),
    (lambda: compress.analytic_flops(ARCH, -5, 30), "n must be >= 1, got -5"),
    (lambda: compress.analytic_flops(ARCH, 10, 0), "n_items must be >= 1, got 0"),
    (lambda: compress.measured_flops(sasrec(30), 11), "n 11 exceeds the 10 positions the model has"),
])
def test_public_helpers_refuse_sizes_they_cannot_serve(call, words):
    with pytest.raises(ConfigError, match=words):
        call()


@pytest.mark.parametrize("kwargs, words", [
    (dict(kcore=-1), "kcore must be >= 0, got -1"),
    (dict(kcore=float("nan")), "kcore must be a whole number, got nan"),
    (dict(min_interactions=1), r"min_interactions \(leave-one-out needs .*\) must be >= 3, got 1"),
    (dict(min_interactions=2.5), "min_interactions .* must be a whole number"),
])
def test_bad_filters_are_refused_before_the_data_is_read(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        compress.load_dataset("/nonexistent/file.tsv", **kwargs)  # the path would fail later, as DataError


def test_entry_points_name_the_object_they_take(data):
    model = sasrec(data.n_items)
    supernet = compress.wrap(model)
    calls = [
        (lambda: compress.fit(model, "default", compress.TrainConfig(epochs=1), "cpu"),
         "the data must be a SequenceDataset, got str; load it with compress.load_dataset"),
        (lambda: compress.fit(model, data, {"epochs": 1}, "cpu"), "cfg must be a TrainConfig, got dict"),
        (lambda: compress.fit(supernet, data, compress.TrainConfig(epochs=1), "cpu"),
         "the model must be a SequenceTransformer, got Supernet.*compress.search"),
        (lambda: compress.search(model, data, compress.SearchConfig(epochs=1)),
         "the model searched must be a Supernet, got SASRec; wrap it first"),
        (lambda: compress.search(supernet, data, {"epochs": 1}), "cfg must be a SearchConfig, got dict"),
        (lambda: compress.evaluate(model, data.items), "the data must be a SequenceDataset, got ndarray"),
        (lambda: compress.split_metrics(model, None), "the data must be a SequenceDataset, got NoneType"),
    ]
    for call, words in calls:
        with pytest.raises(ConfigError, match=words):
            call()


def test_serving_and_export_arguments_are_checked(artifacts, tmp_path):
    model = compress.load(str(artifacts["model"]))
    small = sasrec(3)
    top = compress.Recommender(small, vocabulary=["a", "b", "c"]).recommend([["a"]], k=2)[0]
    assert sorted(i for i, _ in top) == ["b", "c"]  # a list of raw ids is a vocabulary; "a" was seen
    with pytest.raises(ConfigError, match="item ids must be an ordered list of ids .*got str"):
        compress.Recommender(small, vocabulary="abc")  # three characters are not three ids
    out = str(tmp_path / "m")
    for kwargs, words in [(dict(dataset="default"), "dataset must be a SequenceDataset, got str"),
                          (dict(metrics="good"), "metrics must be a dict, got str"),
                          (dict(overwrite="no"), "overwrite must be a bool, got str")]:
        with pytest.raises(ConfigError, match=words):
            compress.export(model, out, **kwargs)
    assert not (tmp_path / "m").exists()


def test_save_supernet_refuses_a_dense_model_and_an_unwritable_place(artifacts, tmp_path):
    with pytest.raises(ConfigError, match="the model saved must be a Supernet, got SASRec"):
        compress.save_supernet(compress.load(str(artifacts["model"])), str(tmp_path / "s"))
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    supernet = compress.load_supernet(str(artifacts["search"] / "supernet"))
    with pytest.raises(ConfigError, match="cannot write .*file/s"):
        compress.save_supernet(supernet, str(blocker / "s"))
    assert blocker.read_text() == "mine"


def test_reporters_checkpoints_and_teachers_are_checked_before_any_work(data, tmp_path):
    from compress.engine.checkpoint import Checkpointer

    model, cfg = sasrec(data.n_items), compress.TrainConfig(epochs=1)
    calls = [
        (lambda: compress.fit(model, data, cfg, "cpu", reporter="rich"), "reporter must be a Reporter, got str"),
        (lambda: compress.fit(model, data, cfg, "cpu", checkpoint=str(tmp_path)),
         "checkpoint must be a Checkpointer, got str"),
        (lambda: compress.search(compress.wrap(model), data, compress.SearchConfig(epochs=1), reporter=print),
         "reporter must be a Reporter, got builtin_function_or_method"),
        (lambda: compress.fit(model, data, compress.TrainConfig(epochs=1, distill=0.5), "cpu", teacher="x"),
         "the teacher must be a SequenceTransformer, got str"),
        (lambda: compress.Reporters(compress.LogReporter(), "csv"), "each reporter must be a Reporter, got str"),
        (lambda: Checkpointer(str(tmp_path), every=float("nan")), "every must be a whole number, got nan"),
        (lambda: compress.MetricsSink(str(tmp_path / "file" / "metrics.csv")),
         "the metrics CSV needs a directory, but .*file is a file"),
    ]
    (tmp_path / "file").write_text("mine")
    for call, words in calls:
        with pytest.raises(ConfigError, match=words):
            call()
    assert (tmp_path / "file").read_text() == "mine" and not list(tmp_path.glob("*.csv"))


MAPPING = {"item_embedding": "items", "position_embedding": "positions", "layers": "blocks",
           "attention": {"qkv": "mix.qkv", "output": "mix.proj"}, "ffn_in": "up", "ffn_out": "down",
           "attention_norm": "norm_a", "ffn_norm": "norm_b", "heads": 2, "norm": "pre", "causal": True,
           "activation": "relu", "objective": "next"}


@pytest.mark.parametrize("change, words", [
    (dict(heads=0), "declared mapping: heads must be >= 1, got 0"),
    (dict(heads=float("nan")), "declared mapping: heads must be a whole number, got nan"),
    (dict(causal="no"), "style causal must be true or false, got 'no'"),  # a truthy string, not False
    (dict(norm="sandwich"), "unknown norm placement 'sandwich'"),
])
def test_a_declared_mapping_is_checked_when_declared(change, words):
    compress.DeclaredAdapter(MAPPING)
    with pytest.raises(ConfigError, match=words):
        compress.DeclaredAdapter({**MAPPING, **change})


def test_a_search_result_and_the_reordering_check_what_they_are_given(data, tmp_path):
    model = sasrec(data.n_items)
    supernet = compress.wrap(model, space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)))
    result = compress.search(supernet, data, compress.SearchConfig(epochs=1, batch_size=512))
    with pytest.raises(ConfigError, match="the supernet to slice from must be a Supernet, got int"):
        result.slice(5)
    with pytest.raises(ConfigError, match="dataset must be a SequenceDataset, got str"):
        result.export(str(tmp_path / "m"), "default")
    assert not (tmp_path / "m").exists()
    for call in (compress.channel_importance, compress.reorder):
        with pytest.raises(ConfigError, match="the model must be a Module, got str; .*pass reorder= to compress.wrap"):
            call("sasrec")


def test_evaluation_and_serving_arguments_are_checked(data):
    model = sasrec(data.n_items)
    for kwargs, words in [(dict(seed=float("nan")), "seed must be a whole number, got nan"),
                          (dict(seed=-1), r"seed must be in \[0, 2147483647\], got -1"),
                          (dict(seed=2 ** 70), r"seed must be in \[0, 2147483647\], got 1180591620717411303424"),
                          (dict(device=0), "device must be a string like 'cuda:0' or a torch.device, got int")]:
        with pytest.raises(ConfigError, match=words):
            compress.evaluate(model, data, "test", "pop100", **kwargs)
    with pytest.raises(ConfigError, match=r"seed must be in \[0, 2147483647\], got 18446744073709551621"):
        compress.split_metrics(model, data, seed=2 ** 64 + 5)  # both once overflowed in torch's manual_seed
    recommender = compress.Recommender(model, vocabulary=data.vocabulary())
    with pytest.raises(ConfigError, match="exclude_seen must be a bool, got str"):
        recommender.recommend([[data.item_tokens[0]]], k=2, exclude_seen="no")  # "no" is truthy


def test_read_options_are_checked_and_one_column_is_never_two(tmp_path):
    from compress.data.readers import ReadOptions
    from compress.errors import DataError

    path = tmp_path / "d.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{i}\n" for u in range(3) for i in range(4)))
    for kwargs, words in [
        (dict(sep=5), "`sep` must be a string, a delimiter such as ','; got 5"),
        (dict(user_col=0), "`user_col` must be a string, a column name, or a 0-based position"),
        (dict(user_col="2", item_col="2"), "must name different columns, got 2, 2"),
    ]:
        with pytest.raises(DataError, match=words):
            ReadOptions(**kwargs)
    for kwargs, words in [(dict(item_col="user_id"), "user and item would both be read from column 'user_id'"),
                          (dict(time_col="item_id"), "the timestamp and item would both be read from column")]:
        with pytest.raises(DataError, match=words):
            compress.load_dataset(str(path), options=ReadOptions(**kwargs), use_cache=False)
    with pytest.raises(DataError, match="options must be a ReadOptions, got dict"):
        compress.load_dataset(str(path), options={"sep": ","})


BAD_HISTORIES = [
    ([[1, 2]], "must be a \\(batch, N\\) tensor of item indices, got list"),
    (torch.tensor([[1.0, 2.0]]), "must hold int64 item indices, got torch.float32; convert them with .long\\(\\)"),
    (torch.tensor([[1, 2]], dtype=torch.uint8), "got torch.uint8"),  # would index as a mask
    (torch.tensor([[True, False]]), "got torch.bool"),
    (torch.tensor([1, 2]), "1 <= N <= max_len = 10, got shape \\(2,\\); give one history as items\\[None\\]"),
    (torch.ones(1, 2, 2, dtype=torch.long), "got shape \\(1, 2, 2\\)"),
    (torch.zeros(2, 0, dtype=torch.long), "got shape \\(2, 0\\)"),
    (torch.ones(1, 11, dtype=torch.long), "got shape \\(1, 11\\); .* keep each history's last 10 items"),
    (torch.tensor([[3, 2], [2, -1]]), "in 0..30 \\(0 pads\\), got -1 in row 1; map raw item ids"),  # read row -1
    (torch.tensor([[31, 2]]), "in 0..30 \\(0 pads\\), got 31 in row 0"),
    (torch.tensor([[1, 2, 0], [0, 1, 2]]), "right-padded .* row 1 has an item after a 0"),  # left padding
    (torch.tensor([[1, 0, 2]]), "row 0 has an item after a 0"),
]


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("items, words", BAD_HISTORIES)
def test_histories_predict_would_misread_are_refused(backbone, items, words):
    torch.manual_seed(0)
    model = compress.get_backbone(backbone)(ARCH, 30, max_len=10).eval()
    for read in (model.predict, model.query_hidden, compress.wrap(model).predict):
        with pytest.raises(ConfigError, match=words):
            read(items)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_histories_that_are_fine_score_as_before(backbone):
    """Empty rows and batches, int32 indices and every length up to N still score, int32 as int64."""
    torch.manual_seed(0)
    model = compress.get_backbone(backbone)(ARCH, 30, max_len=10).eval()
    items = torch.tensor([[5, 30, 1, 0], [0, 0, 0, 0], [7, 0, 0, 0]])
    with torch.no_grad():
        assert torch.equal(model.predict(items.int()), model.predict(items))
        assert model.predict(items[:0]).shape == (0, 31) and model.predict(items[:, :1]).shape == (3, 31)
        assert model.predict(torch.randint(1, 31, (2, 10))).shape == (2, 31)


@pytest.mark.parametrize("backbone", ["sasrec", "bert4rec"])
def test_a_history_scores_alike_at_every_padded_width(backbone):
    """A history of 4 items scores the same given as (1, 4) or padded to max_len, through the model, its
    supernet and a slice: BERT4Rec took a narrow tensor for a full one and dropped the oldest item to make
    room for its mask (0.25 apart). Only a history of max_len items loses its oldest item."""
    torch.manual_seed(0)
    model = compress.get_backbone(backbone)(ARCH, 30, max_len=10).eval()
    supernet = compress.wrap(model)
    history = [5, 9, 13, 21]
    with torch.no_grad():
        for read in (model.predict, supernet.predict):
            want = read(torch.tensor([history + [0] * 6]))
            for width in (4, 5, 9):
                got = read(torch.tensor([history + [0] * (width - 4)]))
                torch.testing.assert_close(got[:, 1:], want[:, 1:], rtol=0, atol=1e-6)
        if backbone == "bert4rec":  # the mask takes the last position of a full history
            full = list(range(1, 11))
            dropped = model.predict(torch.tensor([full[1:] + [0]]))
            torch.testing.assert_close(model.predict(torch.tensor([full]))[:, 1:], dropped[:, 1:], rtol=0, atol=1e-6)


def test_models_come_back_in_the_mode_they_were_given(data):
    """fit and search train in train mode but give models back as they came (a caller's eval-mode model
    stays dropout-free), freeze a teacher only while they use it, and a supernet or a slice is in the
    mode of the model it came from: predict of a train-mode model draws dropout, a different score each call."""
    model = sasrec(data.n_items).eval()
    teacher = sasrec(data.n_items).train()
    teacher.item_embedding.weight.requires_grad_(False)
    compress.fit(model, data, compress.TrainConfig(epochs=1, batch_size=64, distill=0.5), "cpu", teacher=teacher)
    assert not model.training and teacher.training
    assert [p.requires_grad for p in teacher.parameters()].count(False) == 1
    supernet = compress.wrap(model, space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)))
    assert not supernet.training and compress.wrap(sasrec(data.n_items)).training
    result = compress.search(supernet, data, compress.SearchConfig(epochs=1, batch_size=64), "cpu")
    small = result.slice()
    assert not supernet.training and not small.training
    items = torch.tensor([[1, 2, 3, 0]])
    with torch.no_grad():
        assert torch.equal(small.predict(items), small.predict(items))


def test_measuring_gives_the_model_back_in_its_mode_also_when_predict_fails(data, monkeypatch):
    """Evaluation, FLOPs, latency and memory run in eval mode and restore the mode they found, whether
    ``predict`` returns or raises: a failed evaluation used to leave a training model in eval mode."""
    from compress.measure.latency import latency_ms, peak_memory_bytes

    model = sasrec(data.n_items).train()
    measures = [lambda m: compress.evaluate(m, data), lambda m: compress.measured_flops(m, 10),
                lambda m: latency_ms(m, 2, repeats=1, warmup=0), lambda m: peak_memory_bytes(m, 2)]
    for measure in measures:
        measure(model)
        assert model.training
    monkeypatch.setattr(model, "predict", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    monkeypatch.setattr(model, "query_hidden", model.predict)
    for measure in measures:
        with pytest.raises(RuntimeError, match="boom"):
            measure(model)
        assert model.training


def test_a_reloaded_supernet_keeps_its_items_and_is_in_eval_mode(data, tmp_path):
    """save_supernet writes the item vocabulary: a reloaded supernet refuses data of another numbering,
    as the saved one did, instead of adopting the data's ids and labelling every row wrongly."""
    supernet = compress.wrap(sasrec(data.n_items), item_ids=list(reversed(data.item_tokens)))
    compress.save_supernet(supernet, str(tmp_path / "sn"))
    loaded = compress.load_supernet(str(tmp_path / "sn"))
    assert loaded.vocabulary.ids == list(reversed(data.item_tokens)) and not loaded.training
    with pytest.raises(ConfigError, match="number their items differently"):
        compress.search(loaded, data, compress.SearchConfig(epochs=1), "cpu")
    (tmp_path / "sn" / "items.json").unlink()
    with pytest.raises(compress.CheckpointError, match="items.json is missing"):
        compress.load_supernet(str(tmp_path / "sn"))


def test_a_search_result_exports_only_with_data_of_its_items(data, tiny_data_file, tmp_path):
    result = compress.search(compress.wrap(sasrec(data.n_items), space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5))),
                             data, compress.SearchConfig(epochs=1, batch_size=64), "cpu")
    other = compress.load_dataset(str(tiny_data_file), item_ids=list(reversed(data.item_tokens)))
    with pytest.raises(ConfigError, match="number their items differently"):
        result.export(str(tmp_path / "m"), other)
    assert not (tmp_path / "m").exists()
    result.export(str(tmp_path / "m"), data)
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["dataset"]["name"] == data.name  # the statistics as compress.export writes them


@pytest.mark.parametrize("version, words", [(99, "in format 99, written by a newer compress"),
                                            ("1", "format_version must be a whole number"),
                                            (0, "format_version must be a whole number >= 1, got 0")])
def test_a_config_of_another_format_is_refused(data, tmp_path, version, words):
    model = sasrec(data.n_items)
    compress.export(model, str(tmp_path / "m"), dataset=data)
    compress.save_supernet(compress.wrap(model), str(tmp_path / "sn"))
    for path, load in ((tmp_path / "m", compress.load), (tmp_path / "sn", compress.load_supernet)):
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "format_version": version}))
        with pytest.raises(compress.CheckpointError, match=words):
            load(str(path))


def test_export_and_serving_name_what_they_take(data, tmp_path):
    model = sasrec(data.n_items)
    model.vocabulary = data.vocabulary()
    cases = [(lambda: compress.export(compress.wrap(model), str(tmp_path / "a")), "got Supernet; export a dense"),
             (lambda: compress.export(model, str(tmp_path / "b"), metrics={"test/full": 0.3}),
              "metrics must map each split to \\{metric: number\\}.* got 0.3 for 'test/full'"),
             (lambda: compress.export(model, str(tmp_path / "c"), metrics={"test/full": {"ndcg@10": "high"}}),
              "metrics must map each split"),
             (lambda: compress.export(model, str(tmp_path / "d"), metrics={"test/full": {"ndcg@10": 2.0}}),
              "metric ndcg@10 of 'test/full' is 2.0, outside \\[0, 1\\]"),
             (lambda: compress.load(None), "the path to load must be a str or os.PathLike, got NoneType"),
             (lambda: compress.Recommender(str(tmp_path)), "got str; a MODEL_DIR is served by .*Recommender.load"),
             (lambda: compress.Recommender(model, graphs="no"), "graphs must be a bool, got str")]
    for call, words in cases:
        with pytest.raises(ConfigError, match=words):
            call()
    assert not list(tmp_path.iterdir())


def test_wrap_names_a_bad_space_or_taylor_batch(data):
    model = sasrec(data.n_items)
    items = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    targets = torch.tensor([[2, 3, 0, 0], [5, 0, 0, 0]])
    cases = [(dict(space={"hidden_ratios": (0.0,)}), "space must be a SearchSpace, got dict"),
             (dict(reorder_batch=(items,)), "pass batch=\\(items, targets\\), two \\(B, N\\) tensors"),
             (dict(reorder_batch=None), "pass batch=\\(items, targets\\)"),
             (dict(reorder_batch=(items.float(), targets)), "histories must hold int64 item indices"),
             (dict(reorder_batch=(items, targets.float())), "targets must be item indices of the items' shape"),
             (dict(reorder_batch=(items, targets[:, :2])), "shape \\(2, 4\\) and dtype torch.int64, got .* \\(2, 2\\)"),
             (dict(reorder_batch=(items, targets.tolist())), "got list"),
             (dict(reorder_batch=(items, targets + 999)), f"in 0..{data.n_items} \\(0: none\\), got 1001")]
    for kwargs, words in cases:
        reorder = "taylor" if "reorder_batch" in kwargs else None
        with pytest.raises(ConfigError, match=words):
            compress.wrap(model, reorder=reorder, **kwargs)
    assert compress.wrap(model, reorder="taylor", reorder_batch=(items, targets)) is not None


def test_vocabularies_and_histories_that_would_serve_wrong_answers_are_refused(data):
    """An empty id list once fell back silently to the model's own vocabulary; a negative popularity was
    served as an interaction count; a set of items has no order for the model to read."""
    model = sasrec(data.n_items)
    model.vocabulary = data.vocabulary()
    with pytest.raises(ConfigError, match="item ids name no item"):
        compress.Recommender(model, vocabulary=[])
    with pytest.raises(ConfigError, match="popularity must be 3 finite counts >= 0"):
        ItemVocabulary(["a", "b"], [0, -1, 2])
    with pytest.raises(ConfigError, match="ordered list of item ids \\(oldest first\\), got a set"):
        compress.Recommender(model).recommend([set(data.item_tokens[:3])])
    with pytest.raises(ConfigError, match="got a dict"):
        compress.Recommender(model).recommend([{t: 1 for t in data.item_tokens[:3]}])
    with pytest.raises(ConfigError, match="raw item ids, got a Tensor; a tensor of embedding rows is scored by "
                                          "model.predict"):  # each element became "tensor(79)": all unknown
        compress.Recommender(model).recommend([torch.tensor([3, 2, 1])])
    no_counts = compress.Recommender(model, vocabulary=ItemVocabulary(data.item_tokens))  # no popularity
    with pytest.warns(UserWarning, match="skipped 1 unknown item id"), \
            pytest.raises(ConfigError, match=r"lacks: export it with the data it was trained on .*dataset=data"):
        no_counts.recommend([["not an item"]])


def test_models_too_large_to_build_are_refused_before_allocating(data, monkeypatch):
    """A model whose weights outgrow the machine's memory, or a million layers, once ended in a torch
    allocation traceback or minutes of module building; a uniform loss asking for more negatives than
    the catalogue holds drew a block of 256 x K ids (8 GB at K = 10^6 on a 25-item catalogue)."""
    from compress.backbones import transformer

    with pytest.raises(ConfigError, match=r"layers must be in \[1, 1024\], got 1000000"):
        compress.ArchSpec(16, 32, 2, 1_000_000)
    monkeypatch.setattr(transformer, "host_memory_bytes", lambda: 2 ** 30)
    with pytest.raises(ConfigError, match="holds 20.0 GiB of weights, more than this machine's 1.0 GiB of memory"):
        compress.get_backbone("sasrec")(compress.ArchSpec(2 ** 15, 32, 2, 1), 2 ** 15 - 1, max_len=1)
    with torch.device("meta"):  # shapes only: counting FLOPs or parameters of a large model still works
        compress.get_backbone("sasrec")(compress.ArchSpec(2 ** 15, 32, 2, 1), 2 ** 15 - 1, max_len=1)
    cfg = compress.TrainConfig(epochs=1, loss="uniform", negatives=data.n_items)
    with pytest.raises(ConfigError, match=f"draws {data.n_items} negatives from a catalogue of {data.n_items} items"):
        compress.fit(sasrec(data.n_items), data, cfg, "cpu")


def test_wrapping_a_model_with_frozen_weights_says_they_will_train(data):
    """The supernet is a new module: the user's requires_grad flags do not carry over, which a warning says
    rather than training the weights the user froze without a word."""
    model = sasrec(data.n_items)
    model.item_embedding.weight.requires_grad_(False)
    with pytest.warns(UserWarning, match="1 parameter\\(s\\) of the model are frozen .*item_embedding.weight"):
        supernet = compress.wrap(model)
    assert all(p.requires_grad for p in supernet.parameters()) and not model.item_embedding.weight.requires_grad


def test_weights_frozen_in_the_supernet_stay_frozen_in_its_slices_and_their_retraining(data):
    """What the warning above advises: freeze the counterparts in the supernet. Its slices once came back
    with every weight trainable, so retraining a decision moved the weights the user had fixed."""
    supernet = compress.wrap(sasrec(data.n_items), space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)))
    supernet.backbone.item_embedding.weight.requires_grad_(False)
    dense = supernet.slice(1, 0, 0, 0)
    assert not dense.item_embedding.weight.requires_grad
    assert [n for n, p in dense.named_parameters() if not p.requires_grad] == ["item_embedding.weight"]
    before = dense.item_embedding.weight.detach().clone()
    compress.fit(dense, data, compress.TrainConfig(epochs=1, batch_size=64), "cpu")
    assert torch.equal(dense.item_embedding.weight, before)
