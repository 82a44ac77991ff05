"""Data parallelism over torch.distributed: two gloo processes train, search and evaluate as one
process does (same decision, α/β identical on every rank, sharded metrics exactly equal), only rank 0
writes, and `torchrun -m compress` runs the CLI end to end."""
from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from crash import Crash, CrashAt
from synthetic import walking_dataset

import compress
from compress.engine.checkpoint import Checkpointer
from compress.engine.config import TrainConfig
from compress.engine.train import fit
from compress.errors import CheckpointError
from compress.measure.evaluation import evaluate
from compress.nas.config import SearchConfig
from compress.nas.search import search
from compress.runtime import distributed
from compress.runtime.launch import exit_without_teardown

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"


def backbone(data):
    torch.manual_seed(0)
    arch = compress.ArchSpec(hidden=16, inner=32, heads=2, layers=2)
    return compress.get_backbone("sasrec")(arch, data.n_items, 20, dropout=0.0)  # dropout differs per rank


TRAIN = TrainConfig(epochs=2, batch_size=64, patience=5, seed=3)


def crashed_and_resumed(data, out: str) -> dict:
    """Train with a checkpoint every 2 steps, crash at step 5 (epoch 1), resume: the final weights."""
    ckpt = Checkpointer(os.path.join(out, f"resume{distributed.world_size()}"), every=2)
    with pytest.raises(Crash):
        fit(backbone(data), data, TRAIN, "cpu", CrashAt(5), ckpt)
    model = backbone(data)
    fit(model, data, TRAIN, "cpu", checkpoint=ckpt)
    return {k: v.clone() for k, v in model.state_dict().items()}


def jobs(data, out: str) -> dict:
    """The work both the single process and each rank do; returns what the test compares."""
    model = backbone(data)
    trained = fit(model, data, TRAIN, "cpu", checkpoint=Checkpointer(os.path.join(out, f"ckpt{distributed.world_size()}")))
    supernet = compress.wrap(backbone(data), space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)),
                             attention="linear", gate_layers=1)
    found = search(supernet, data, SearchConfig(epochs=2, batch_size=64, tradeoff=0.5, seed=3), "cpu")
    reference = backbone(data)
    return {"loss": [r["loss"] for r in trained.history], "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "alpha": supernet.alpha.logits.detach().clone(), "beta": supernet.beta.logits.detach().clone(),
            "decision": (found.decision["width"], found.decision["depth"]),
            "eval": {p: evaluate(reference, data, "test", p, 10, batch_size=48, seed=1) for p in ("full", "pop100")}}


def worker(rank: int, out: str) -> None:
    # The ranks meet through a file rather than a TCP store on a port picked free and released, which
    # torchrun's test in the next pytest worker may take meanwhile. A rank that aborts prints its stack.
    faulthandler.enable(all_threads=True)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        data = walking_dataset()
        torch.save({**jobs(data, out), "resumed": crashed_and_resumed(data, out)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    exit_without_teardown(0)  # as the CLI's workers end: gloo's threads can abort the interpreter's teardown


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    mp.spawn(worker, args=(out,), nprocs=2, join=True)
    ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(2)]
    return jobs(walking_dataset(), out), ranks, out


def test_every_rank_holds_the_same_weights_and_alpha_beta(runs):
    _, (r0, r1), _ = runs
    assert torch.equal(r0["alpha"], r1["alpha"]) and torch.equal(r0["beta"], r1["beta"])
    assert r0["decision"] == r1["decision"]
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k


def test_two_processes_train_and_search_as_one(runs):
    single, (r0, _), _ = runs
    assert r0["decision"] == single["decision"]
    assert r0["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert torch.allclose(r0["alpha"], single["alpha"], atol=1e-4)
    assert torch.allclose(r0["beta"], single["beta"], atol=1e-4)
    for k in single["weights"]:  # only the order of the gradient sums differs
        assert torch.allclose(r0["weights"][k], single["weights"][k], atol=1e-4), k


def test_sharded_evaluation_equals_one_process_exactly(runs):
    single, (r0, r1), _ = runs
    for protocol in ("full", "pop100"):
        drop = lambda m: {k: v for k, v in m.items() if k != "eval_seconds"}  # noqa: E731
        assert drop(r0["eval"][protocol]) == drop(single["eval"][protocol]) == drop(r1["eval"][protocol])


def test_a_crashed_two_process_run_resumes_to_the_uninterrupted_weights(runs):
    _, ranks, _ = runs
    for r in ranks:
        for k in r["weights"]:
            assert torch.equal(r["resumed"][k], r["weights"][k]), k


def test_rank0_writes_one_checkpoint_with_every_ranks_rng(runs):
    _, _, out = runs
    saved = Checkpointer(os.path.join(out, "ckpt1")).load()
    assert isinstance(saved["rng"], dict)
    with pytest.raises(CheckpointError, match="written by 2 process"):
        Checkpointer(os.path.join(out, "ckpt2")).load()


def test_shards_partition_every_batch():
    for n in range(0, 9):
        for world in (1, 2, 3):
            parts = [distributed.shard_of(n, r, world) for r in range(world)]
            assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))


def test_torchrun_cli_matches_one_process(tmp_path):
    """`torchrun -m compress search` end to end: rank 0 alone prints and writes; same decision."""
    common = ["search", "--recipe", str(TINY), "--set", "dropout=0", "--search-epochs", "1", "--retrain-epochs", "1",
              "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "compress", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "compress", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert two.returncode == 0, two.stderr
    lines = [line for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 1 prints nothing
    a, b = json.loads(one.stdout.splitlines()[-1]), json.loads(lines[0])
    assert b["decision"]["arch"] == a["decision"]["arch"]
    ndcg = [r["retrain"]["metrics"]["test/full"]["ndcg@10"] for r in (a, b)]
    assert ndcg[1] == pytest.approx(ndcg[0], abs=0.01)  # weights equal up to the order of gradient sums
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no partial or scratch left behind
    card = json.loads((tmp_path / "two" / "search_card.json").read_text())
    assert card["versions"]["processes"] == 2
    exported = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "compress", "export", str(tmp_path / "two"), "--out", str(tmp_path / "m"),
                               "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert exported.returncode == 0, exported.stderr  # rank 1 found the export "already exists" and failed
    assert [json.loads(line)["out"] for line in exported.stdout.splitlines() if line.startswith("{")] == \
        [str(tmp_path / "m")]
