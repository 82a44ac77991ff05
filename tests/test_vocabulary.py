"""Item vocabularies as data: a model trained with another item numbering is refused with the fix
named, and once aligned it scores every raw item as before; RecBole's numbering reproduced; RecBole
checkpoints read without RecBole and without unpickling code; Hugging Face directories with their
vocabulary as warm starts."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelp import error_line, invoke
from test_adapters import SASRec as RecBoleStandIn

import compress
from compress.adapters.recbole import read_checkpoint
from compress.data.vocabulary import ItemVocabulary


def inter_file(path: Path, rows) -> Path:
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n" +
                    "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows))
    return path


def shuffled_rows(seed: int = 0, users: int = 60, items: int = 25):
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(rng.integers(items))}", int(rng.integers(10 ** 6))) for u in range(users)
            for _ in range(int(rng.integers(4, 9)))]
    rng.shuffle(rows)  # file order is neither user nor time order
    return rows


def recbole_rule(rows):
    """RecBole 1.2.1's remap (recbole/data/dataset/dataset.py ``_remap``: pandas.factorize of the
    column as read): [PAD] first, then each token by its first appearance in the file."""
    seen = {}
    for _, item, _ in rows:
        seen.setdefault(item, len(seen))
    return list(seen)


def test_recbole_numbering_is_first_appearance_in_the_file(tmp_path):
    rows = shuffled_rows()
    data = compress.load_dataset(str(inter_file(tmp_path / "d.inter", rows)), numbering="recbole")
    assert data.item_tokens == recbole_rule(rows)
    ours = compress.load_dataset(str(tmp_path / "d.inter"))
    assert ours.item_tokens != data.item_tokens and sorted(ours.item_tokens) == sorted(data.item_tokens)
    assert ours.vocabulary().difference(data.vocabulary())  # equal counts prove nothing


def test_recbole_numbering_of_ml100k_is_recboles(shared_data, tmp_path):
    """Checked against RecBole 1.2.1 itself (dataset.field2id_token['item_id'] of the same .inter,
    all 1,682 items equal); here its first rows."""
    with gzip.open(shared_data / "ml-100k" / "u.data.gz", "rt") if (shared_data / "ml-100k" / "u.data.gz").exists() \
            else open(shared_data / "ml-100k" / "u.data") as fh:
        rows = [line.split("\t")[:2] + [line.split("\t")[3].strip()] for line in fh]
    data = compress.load_dataset(str(inter_file(tmp_path / "ml100k.inter", rows)), numbering="recbole")
    assert data.n_items == 1682 and data.item_tokens[:5] == ["242", "302", "377", "51", "346"]


def trained_on(data, seed: int = 0):
    torch.manual_seed(seed)
    model = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 2, 1), data.n_items, 10)
    compress.fit(model, data, compress.TrainConfig(epochs=1, batch_size=128))
    return model


def scores_by_id(model, vocabulary: ItemVocabulary, history):
    index = vocabulary.index
    items = compress.pad_right([np.array([index[t] for t in history])], model.max_len)
    with torch.no_grad():
        scores = model.eval().predict(items)[0]
    return {t: float(scores[index[t]]) for t in vocabulary.ids}


def test_a_model_of_another_numbering_is_refused_then_aligned(tmp_path):
    """(a) the mismatch is refused, naming the fix; (b) the data read onto the model's vocabulary gives
    every raw item the score it had before wrapping."""
    rows = shuffled_rows(1)
    path = str(inter_file(tmp_path / "d.inter", rows))
    theirs = compress.load_dataset(path, numbering="recbole")  # how "their" system numbered the items
    model = trained_on(theirs)
    ours = compress.load_dataset(path)
    with pytest.raises(compress.ConfigError, match="number their items differently.*item_ids"):
        compress.evaluate(model, ours)
    supernet = compress.wrap(model, attention="softmax", gate_layers=0, item_ids=theirs.item_tokens)
    with pytest.raises(compress.ConfigError, match="number their items differently"):
        compress.search(supernet, ours, compress.SearchConfig(epochs=1), "cpu")
    aligned = compress.load_dataset(path, item_ids=theirs.item_tokens)
    assert aligned.item_tokens == theirs.item_tokens
    history = [t for _, t, _ in rows[:4]]
    before = scores_by_id(model, theirs.vocabulary(), history)
    full = supernet.slice(0, supernet.full.layers - 1)
    assert full.vocabulary.ids == theirs.item_tokens
    after = scores_by_id(full, aligned.vocabulary(), history)
    assert before.keys() == after.keys() and all(abs(before[t] - after[t]) < 1e-5 for t in before)
    compress.evaluate(model, aligned)  # now accepted


def test_unknown_items_are_dropped_and_counted_or_appended(tmp_path):
    rows = shuffled_rows(2)
    path = str(inter_file(tmp_path / "d.inter", rows))
    full = compress.load_dataset(path)
    known = full.item_tokens[:-3]
    dropped = compress.load_dataset(path, item_ids=known)
    assert dropped.item_tokens == known and dropped.info["dropped_interactions"] > 0
    appended = compress.load_dataset(path, item_ids=known, unknown_items="append")
    assert appended.item_tokens[:len(known)] == known and set(appended.item_tokens) == set(full.item_tokens)
    model = trained_on(dropped)
    grown = compress.wrap(model, item_ids=appended.item_tokens)  # fresh rows for the three new items
    assert grown.n_items == appended.n_items
    assert torch.equal(grown.backbone.item_embedding.weight[:len(known) + 1], model.item_embedding.weight)


def recbole_checkpoint(path: Path, model: RecBoleStandIn) -> Path:
    """A checkpoint as RecBole's trainer saves one: a pickled dict with its Config object."""
    config = RecBoleConfig({"model": "SASRec", "hidden_size": model.hidden_size, "inner_size": model.inner_size,
                            "n_layers": model.n_layers, "n_heads": model.n_heads, "hidden_dropout_prob": 0.0,
                            "attn_dropout_prob": 0.0, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
                            "MAX_ITEM_LIST_LENGTH": model.max_seq_length})
    torch.save({"config": config, "epoch": 3, "state_dict": model.state_dict(), "other_parameter": {},
                "optimizer": {}}, path)
    return path


class RecBoleConfig:
    """Stands for recbole.config.configurator.Config: pickled with its attributes."""

    def __init__(self, final: dict) -> None:
        self.final_config_dict = final


def test_a_recbole_checkpoint_scores_as_recbole_does(tmp_path):
    """Checked against RecBole 1.2.1 itself: a trained SASRec's full_sort_predict and ours differ by
    1.2e-6 at most; here a stand-in with RecBole's names and arithmetic."""
    torch.manual_seed(3)
    theirs = RecBoleStandIn()
    model, adapter = read_checkpoint(str(recbole_checkpoint(tmp_path / "SASRec.pth", theirs)))
    items = torch.randint(1, model.n_items + 1, (4, model.max_len))
    items[1, 5:] = 0
    with torch.no_grad():
        want = theirs(items)[torch.arange(4), (items > 0).sum(1) - 1] @ theirs.item_embedding.weight.T
        got = model.eval().predict(items)
    assert (want[:, 1:] - got[:, 1:]).abs().max() < 1e-5
    assert adapter.name == "recbole-sasrec" and adapter.recbole_config["hidden_size"] == theirs.hidden_size


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_never_runs_the_code_it_carries(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"config": Boom(), "state_dict": {}}, path)
    with pytest.raises(compress.CompressError):
        read_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists() and not (Path.cwd() / "pwned").exists()
    with open(tmp_path / "plain.pth", "wb") as fh:
        pickle.dump({"config": Boom()}, fh)
    with pytest.raises(compress.CompressError):
        read_checkpoint(str(tmp_path / "plain.pth"))


def test_search_init_from_a_recbole_checkpoint(tmp_path):
    rows = shuffled_rows(4)
    path = inter_file(tmp_path / "d.inter", rows)
    n_items = len(recbole_rule(rows))
    torch.manual_seed(0)
    theirs = RecBoleStandIn()
    theirs.item_embedding = torch.nn.Embedding(n_items + 1, theirs.hidden_size, padding_idx=0)
    ckpt = recbole_checkpoint(tmp_path / "SASRec.pth", theirs)
    out = tmp_path / "run"
    result = invoke("search", "--init", ckpt, "--data", path, "--search-epochs", "1", "--retrain-epochs", "1",
                    "--hidden-ratios", "0,0.5", "--inner-ratios", "0,0.5", "--device", "cpu", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["item_numbering"] == "recbole"
    assert json.loads((out / "retrained" / "items.json").read_text())["item_ids"] == recbole_rule(rows)


def test_a_hugging_face_directory_needs_its_vocabulary(tmp_path):
    transformers = pytest.importorskip("transformers")
    data = compress.load_dataset()
    cfg = transformers.GPT2Config(vocab_size=data.n_items + 1, n_embd=16, n_layer=1, n_head=2, n_inner=32,
                                  n_positions=10, bos_token_id=None, eos_token_id=None)
    transformers.GPT2Model(cfg).save_pretrained(tmp_path / "gpt")
    args = ["search", "--init", tmp_path / "gpt", "--search-epochs", "1", "--retrain-epochs", "1", "--device", "cpu",
            "--hidden-ratios", "0,0.5", "--inner-ratios", "0,0.5", "--stage", "search"]
    assert "has no items.json" in error_line(invoke(*args, "--out", tmp_path / "a"))
    (tmp_path / "gpt" / "items.json").write_text(json.dumps({"item_ids": data.item_tokens}))
    result = invoke(*args, "--out", tmp_path / "b", "--json")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("popularity", [0, "abc", {"a": 1}, [1.0, 2.0], [0, float("nan"), 1], [0, "1", 2],
                                        [0, -1, 2]])
def test_popularity_that_is_not_one_number_per_row_is_refused(popularity):
    with pytest.raises(compress.ConfigError, match="popularity must be 3 finite counts >= 0"):
        ItemVocabulary(["a", "b"], popularity)


@pytest.mark.parametrize("ids, words", [
    ("abcde", "must be an ordered list of ids .*got str"),
    ({"a", "b"}, "must be an ordered list of ids .*got set"),
    ({"a": 1}, "must be an ordered list of ids .*got dict"),
    (["a", None, "c"], "item id None of row 2 is neither a non-empty string nor an integer"),
    (["a", "", "c"], "item id '' of row 2"),
    ([float("nan"), "b"], "item id nan of row 1"),
    ([1.0, 2.0], "item id 1.0 of row 1"),
    ([True, "b"], "item id True of row 1"),
])
def test_ids_no_data_could_match_are_refused(ids, words):
    with pytest.raises(compress.ConfigError, match=words):
        ItemVocabulary(ids)


def test_integer_ids_read_as_the_data_writes_them():
    assert ItemVocabulary(np.array([3, 1, 2])).ids == ["3", "1", "2"]
    assert ItemVocabulary(("x", 7)).ids == ["x", "7"]


def test_wrapping_with_fewer_ids_than_rows_says_how_many_each_has():
    model = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 2, 1), 5, max_len=10)
    with pytest.raises(compress.ConfigError, match="item_ids names 2 items but the model has 5 item rows"):
        compress.wrap(model, item_ids=["a", "b"])
    with pytest.raises(compress.ConfigError, match="got str"):
        compress.wrap(model, item_ids="abcde")  # five characters are not five ids


def test_a_vocabulary_given_beside_the_models_own_must_be_the_same(tmp_path):
    """Recommender, export and wrap once took another numbering of the model's rows without a word."""
    data = compress.load_dataset()
    model = compress.get_backbone("sasrec")(compress.ArchSpec(16, 32, 2, 1), data.n_items, 10)
    model.vocabulary = data.vocabulary()  # as compress.fit leaves it
    other = list(reversed(data.item_tokens))
    for call in (lambda ids: compress.Recommender(model, vocabulary=ids),
                 lambda ids: compress.export(model, str(tmp_path / "m"), vocabulary=ids, overwrite=True)):
        with pytest.raises(compress.ConfigError, match="carries its own item vocabulary and the vocabulary given "
                                                       "names its rows otherwise"):
            call(other)
        call(data.item_tokens)  # the same ids: accepted
    with pytest.raises(compress.ConfigError, match="the item_ids given names its rows otherwise"):
        compress.wrap(model, item_ids=other)
    assert compress.wrap(model, item_ids=data.item_tokens).vocabulary.ids == data.item_tokens


def test_search_init_puts_the_data_onto_the_inits_vocabulary(tmp_path):
    """An HF directory whose items.json lists the items in another order than the data's first appearance:
    the search and its retraining read the data in the init's numbering, as evaluate does."""
    transformers = pytest.importorskip("transformers")
    rows = shuffled_rows(5)
    path = inter_file(tmp_path / "d.inter", rows)
    ids = sorted({item for _, item, _ in rows}, reverse=True)
    assert ids != compress.load_dataset(str(path)).item_tokens
    cfg = transformers.GPT2Config(vocab_size=len(ids) + 1, n_embd=16, n_layer=1, n_head=2, n_inner=32,
                                  n_positions=10, bos_token_id=None, eos_token_id=None)
    transformers.GPT2Model(cfg).save_pretrained(tmp_path / "gpt")
    (tmp_path / "gpt" / "items.json").write_text(json.dumps({"item_ids": ids}))
    out = tmp_path / "run"
    result = invoke("search", "--init", tmp_path / "gpt", "--data", path, "--search-epochs", "1", "--retrain-epochs",
                    "1", "--hidden-ratios", "0,0.5", "--inner-ratios", "0,0.5", "--device", "cpu", "--out", out,
                    "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((out / "supernet" / "items.json").read_text())["item_ids"] == ids
    assert json.loads((out / "retrained" / "items.json").read_text())["item_ids"] == ids


def test_search_init_from_a_recbole_checkpoint_names_its_rows_by_the_data(tmp_path):
    """A RecBole checkpoint's rows are the items of the file it was trained on, in RecBole's numbering,
    which the search reads the data in: the supernet knows them, and no warning asks for item_ids."""
    rows = shuffled_rows(6)
    path = inter_file(tmp_path / "d.inter", rows)
    torch.manual_seed(0)
    theirs = RecBoleStandIn()
    theirs.item_embedding = torch.nn.Embedding(len(recbole_rule(rows)) + 1, theirs.hidden_size, padding_idx=0)
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("search", "--init", recbole_checkpoint(tmp_path / "SASRec.pth", theirs), "--data", path,
                        "--search-epochs", "1", "--stage", "search", "--hidden-ratios", "0,0.5", "--inner-ratios",
                        "0,0.5", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert not [w for w in caught if "without item_ids" in str(w.message)]
    assert json.loads((out / "supernet" / "items.json").read_text())["item_ids"] == recbole_rule(rows)
