"""``model.recommend`` on an exported MODEL_DIR (raw item ids in and out) and `compress recommend`."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from clihelp import error_line, invoke, read

import compress
from compress.data.batching import pad_right

N = 20  # the tiny recipe's seq_len


@pytest.fixture(scope="module")
def model_dir(artifacts) -> Path:
    return artifacts["model"]


@pytest.fixture(scope="module")
def model(model_dir):
    return compress.load(str(model_dir))


@pytest.fixture(scope="module")
def items(model_dir) -> Dict:
    return read(model_dir / "items.json")


def user_histories(model, items, n: int = 8) -> List[List[str]]:
    """Raw-id histories of ``n`` users, the last one longer than N with several items only before its last N."""
    seqs, _ = compress.load_dataset().eval_pairs("test")
    ids = items["item_ids"]
    out = [[ids[i - 1] for i in s[-(4 + 2 * u):]] for u, s in enumerate(seqs[:n - 1])]
    out.append([ids[i - 1] for i in next(s for s in seqs if len(set(s[:-N])) > 5)])
    return out


def scores_of(model, items, history: List[str]) -> torch.Tensor:
    """``predict`` on the history mapped to indices by hand: (n_items + 1,)."""
    index = {tok: i + 1 for i, tok in enumerate(items["item_ids"])}
    with torch.no_grad():
        return model.predict(pad_right([torch.tensor([index[t] for t in history]).numpy()], N))[0]


def recommend(model, histories, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known ids only: no warning expected, but for lists shorter than k
        warnings.filterwarnings("ignore", "[0-9]+ of [0-9]+ histories got fewer than the")
        return compress.Recommender(model).recommend(histories, **kwargs)


def test_raw_ids_best_first(model, items):
    hists = user_histories(model, items)
    recs = recommend(model, hists, k=10)
    assert len(recs) == len(hists)
    index = {tok: i + 1 for i, tok in enumerate(items["item_ids"])}
    for hist, rec in zip(hists, recs):
        assert len(rec) == 10
        ids = [item for item, _ in rec]
        scores = [s for _, s in rec]
        assert all(isinstance(i, str) and i in index for i in ids) and len(set(ids)) == 10
        assert scores == sorted(scores, reverse=True)
        want = scores_of(model, items, hist)
        assert scores == pytest.approx([float(want[index[i]]) for i in ids], abs=1e-5)
    # raw ids, not indices: the default dataset's ids are not 1..n_items in order
    assert items["item_ids"][:5] != ["1", "2", "3", "4", "5"]


def test_exclude_seen(model, items):
    hists = user_histories(model, items)
    every = model.n_items
    with pytest.warns(UserWarning, match=f"{len(hists)} of {len(hists)} histories got fewer than the {every} items "
                      f"asked for: the catalogue holds {every}, less the items of the history"):
        excluded = compress.Recommender(model).recommend(hists, k=every)
    for hist, seen_out, seen_in in zip(hists, excluded, recommend(model, hists, k=every, exclude_seen=False)):
        assert not {i for i, _ in seen_out} & set(hist)
        assert len(seen_out) == every - len(set(hist))
        assert {i for i, _ in seen_in} == set(items["item_ids"])  # history items come back when allowed
        kept = [r for r in seen_in if r[0] not in set(hist)]
        assert dict(seen_out) == dict(kept)  # the same scores, only the history removed
        assert [s for _, s in seen_out] == [s for _, s in kept]  # and the same order (up to ties)
    top = recommend(model, hists[:1], k=1, exclude_seen=False)[0][0][0]
    again = recommend(model, [hists[0] + [top]], k=5, exclude_seen=True)[0]
    assert top not in [i for i, _ in again]


def test_unknown_ids_are_skipped_with_one_warning(model, items):
    hists = user_histories(model, items)[:2]
    noisy = [["nope-1", *hists[0][:2], "nope-2", *hists[0][2:]], [*hists[1], "nope-3"]]
    with pytest.warns(UserWarning) as caught:
        recs = compress.Recommender(model).recommend(noisy, k=5)
    assert len(caught) == 1 and "skipped 3 unknown item id(s)" in str(caught[0].message)
    assert recs == recommend(model, hists, k=5)


def test_empty_history_gets_the_most_popular_items(model, items):
    k = 10
    pop = items["popularity"]
    with pytest.warns(UserWarning) as caught:
        recs = compress.Recommender(model).recommend([[], ["nope"], user_histories(model, items)[0]], k=k)
    messages = [str(w.message) for w in caught]
    assert "skipped 1 unknown item id(s) in the histories" in messages
    assert [w.category for w in caught if "no known item" in str(w.message)] == [compress.PopularityFallback]
    assert "2 of 3 histories held no known item" in " ".join(messages)
    assert recs[0] == recs[1]
    index = {tok: i + 1 for i, tok in enumerate(items["item_ids"])}
    counts = [pop[index[item]] for item, _ in recs[0]]
    assert [s for _, s in recs[0]] == counts  # the interaction counts are the scores
    assert counts == sorted(pop[1:], reverse=True)[:k]  # the k largest counts, best first
    assert len({i for i, _ in recs[0]}) == k
    assert recs[2] != recs[0]  # a real history is scored by the model


def test_long_history_equals_its_last_n_items(model, items):
    long = user_histories(model, items)[-1]
    assert len(long) > N
    for exclude in (False, True):
        full = recommend(model, [long], k=model.n_items, exclude_seen=exclude)[0]
        tail = recommend(model, [long[-N:]], k=model.n_items, exclude_seen=exclude)[0]
        scores = dict(tail)
        older = set(long[:-N]) - set(long[-N:])
        if exclude:  # the older items are removed too, and nothing else changes
            assert older and not older & {i for i, _ in full}
            tail = [r for r in tail if r[0] not in older]
        assert {i for i, _ in full} == {i for i, _ in tail}
        assert [s for _, s in full] == pytest.approx([scores[i] for i, _ in full], abs=1e-6)
        assert [s for _, s in full] == sorted((s for _, s in full), reverse=True)


def test_bad_k(model):
    with pytest.raises(compress.ConfigError, match="k must be >= 1"):
        compress.Recommender(model).recommend([["1"]], k=0)


def test_recommend_cli_json(model_dir, model, items):
    hist = user_histories(model, items)[0][:3]
    result = invoke("recommend", model_dir, "--history", ",".join(hist), "--k", "5", "--json")
    assert result.exit_code == 0, result.stderr
    recs = json.loads(result.stdout)
    assert len(recs) == 5 and all(set(r) == {"item", "score", "by"} and r["by"] == "model" for r in recs)
    want = recommend(model, [hist], k=5)[0]
    assert [r["item"] for r in recs] == [i for i, _ in want]
    assert not {r["item"] for r in recs} & set(hist)


def test_recommend_cli_unknown_ids_and_keep_seen(model_dir, model, items):
    hist = user_histories(model, items)[0][:3]
    result = invoke("recommend", model_dir, "--history", ",".join([*hist, "nope-a", "nope-b"]), "--k", "3",
                    "--keep-seen", "--json")
    assert result.exit_code == 0, result.stderr
    assert "skipped 2 unknown item id(s)" in result.stderr
    assert [r["item"] for r in json.loads(result.stdout)] == \
        [i for i, _ in recommend(model, [hist], k=3, exclude_seen=False)[0]]


def test_recommend_cli_says_when_fewer_items_than_asked_remain(model_dir, model, items):
    """A history of every item (with the history left out) or a k beyond the catalogue gets a shorter
    list, and says so, instead of an empty table and exit code 0 with nothing on stderr."""
    everything = invoke("recommend", model_dir, "--history", ",".join(items["item_ids"]), "--k", "5", "--json")
    assert everything.exit_code == 0 and json.loads(everything.stdout) == []
    assert f"1 of 1 histories got fewer than the 5 items asked for: the catalogue holds {model.n_items}, less the " \
        "items of the history" in everything.stderr.replace("\n", "")
    beyond = invoke("recommend", model_dir, "--history", items["item_ids"][0], "--k", "100000", "--keep-seen")
    assert beyond.exit_code == 0 and "got fewer than the 100000 items asked for" in beyond.stderr


def test_recommend_cli_says_when_popularity_answers(model_dir, items):
    """A history of unknown ids only is answered by popularity: the counts are labelled as such in the
    table, the JSON and a warning, never passed off as the model's scores."""
    result = invoke("recommend", model_dir, "--history", "nope-a,nope-b", "--k", "3", "--json")
    assert result.exit_code == 0, result.stderr
    recs = json.loads(result.stdout)
    assert [r["by"] for r in recs] == ["popularity"] * 3
    assert sorted((r["score"] for r in recs), reverse=True) == sorted(items["popularity"][1:], reverse=True)[:3]
    assert "1 of 1 histories held no known item" in result.stderr
    table = invoke("recommend", model_dir, "--history", "nope-a", "--k", "3")
    assert table.exit_code == 0 and "interactions" in table.stdout and "score" not in table.stdout


def test_recommend_cli_on_a_missing_dir(tmp_path):
    result = invoke("recommend", tmp_path / "nothing", "--history", "a,b")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_recommend_cli_takes_device(model_dir, model, items):
    """`recommend --device` takes what the other commands' --device takes: the CPU serves the same list,
    a device that is not one or does not exist is one `error:` line and exit code 2."""
    hist = user_histories(model, items)[0][:3]
    result = invoke("recommend", model_dir, "--history", ",".join(hist), "--k", "5", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["item"] for r in json.loads(result.stdout)] == [i for i, _ in recommend(model, [hist], k=5)[0]]
    for bad, said in (("tpu", "--device: 'tpu' is not a device"), ("cuda:99", "--device cuda:99 asked for")):
        line = error_line(invoke("recommend", model_dir, "--history", ",".join(hist), "--device", bad))
        assert said in line, line
