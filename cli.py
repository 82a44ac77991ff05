"""The ``compress`` command line (typer). Every bad input ends in one line on stderr and exit code 2."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compress.errors import CompressError, Interrupted

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="DNS-Rec compression for sequential recommenders: train, search, export, evaluate.")
out_console = Console()
err_console = Console(stderr=True)


def clean_errors(fn: Callable) -> Callable:
    """Turn the library's typed errors into a one-line message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from compress.runtime import distributed
        from compress.runtime.allocator import tune_allocator

        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        tune_allocator()
        try:
            distributed.init_from_env()  # under torchrun: join the process group
            with quiet_unless_main():
                return fn(*args, **kwargs)
        except Interrupted as exc:  # SIGINT: a checkpoint was written; the shell convention for Ctrl-C
            err_console.print(escape(str(exc)), highlight=False, soft_wrap=True)
            raise typer.Exit(130)
        except CompressError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted; nothing was written")
            raise typer.Exit(130)
        finally:
            distributed.shutdown()
    return wrapper


@contextlib.contextmanager
def quiet_unless_main():
    """On ranks other than 0 of a distributed run: no progress and no results on stdout or stderr
    (rank 0 prints them once); errors are still printed by every rank."""
    from compress.runtime import distributed

    if distributed.is_main():
        yield
        return
    out_console.quiet = err_console.quiet = True
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            yield
    finally:
        out_console.quiet = err_console.quiet = False


DataOpt = typer.Option(None, "--data", help="Dataset name (ml-1m, ml-100k, beauty, toys, lastfm, gowalla, "
                       "douban-book), a file or a directory. Default: the embedded Gowalla sample.")
DataDirOpt = typer.Option(None, "--data-dir", help="Where named datasets live (else $COMPRESS_DATA_DIR).")
FormatOpt = typer.Option(None, "--format", help="auto, atomic, ml-dat, udata, delimited or sequence.")
RecipeOpt = typer.Option(None, "--recipe", help="YAML recipe; flags and --set override it.")
SetOpt = typer.Option([], "--set", help="Override any recipe key: --set key=value (repeatable).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N.")
ResumeOpt = typer.Option(None, "--resume", help="Continue the interrupted run RUN_DIR (its RUN_DIR.partial/ "
                         "checkpoint) with its saved options.")
CheckpointOpt = typer.Option(None, "--checkpoint-every", help="Also checkpoint every N steps (default: each epoch).")
LossOpt = typer.Option(None, "--loss", help="full (softmax over every item), or sampled: uniform, inbatch "
                       "(logQ-corrected) for large catalogs.")
NegativesOpt = typer.Option(None, "--negatives", help="Negatives per step of a sampled --loss (default 100).")
PrecisionOpt = typer.Option(None, "--precision", help="fp32 (default), bf16 (CPU or CUDA) or fp16 (CUDA): "
                            "autocast of the weight steps.")


def resume_target(resume: Optional[str], out: Optional[str], recipe: Optional[str], flags: dict, set_: list):
    """The RUN_DIR to write: ``--resume``'s (which takes no other run options) or ``--out``."""
    from compress.errors import ConfigError

    if resume is None:
        return out
    given = sorted(k for k, v in flags.items() if v is not None) + (["--recipe"] if recipe else []) + \
        (["--set"] if set_ else [])
    if given or (out is not None and out != resume):
        raise ConfigError(f"--resume continues {resume} with its saved options; drop {', '.join(given) or '--out'}")
    return resume


def metrics_table(title: str, rows: dict) -> Table:
    table = Table(title=title)
    table.add_column("split/protocol")
    names = [m for m in next(iter(rows.values())) if "@" in m]
    for m in names:
        table.add_column(m, justify="right")
    for key, vals in rows.items():
        table.add_row(key, *(f"{vals[m]:.4f}" for m in names))
    return table


def print_trained(title: str, result: dict, json_out: bool) -> None:
    """The result of a training run: one JSON object, or the metrics table and where it was saved."""
    if json_out:
        print(json.dumps(result))
        return
    out_console.print(metrics_table(f"{title} (best epoch {result['best_epoch']})", result["metrics"]))
    out_console.print(f"saved to {result['out']}")


@app.command()
@clean_errors
def train(
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Registered backbone: sasrec or bert4rec."),
    data: Optional[str] = DataOpt,
    data_dir: Optional[str] = DataDirOpt,
    format: Optional[str] = FormatOpt,
    user_col: Optional[str] = typer.Option(None, "--user-col"),
    item_col: Optional[str] = typer.Option(None, "--item-col"),
    time_col: Optional[str] = typer.Option(None, "--time-col", help="Timestamp column, or 'none' for file order."),
    sep: Optional[str] = typer.Option(None, "--sep", help="Field delimiter (default: detect)."),
    recipe: Optional[str] = RecipeOpt,
    set_: List[str] = SetOpt,
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    dropout: Optional[float] = typer.Option(None, "--dropout"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="N: keep the last N items of each history."),
    hidden: Optional[int] = typer.Option(None, "--hidden"),
    inner: Optional[int] = typer.Option(None, "--inner"),
    layers: Optional[int] = typer.Option(None, "--layers"),
    heads: Optional[int] = typer.Option(None, "--heads"),
    attention: Optional[str] = typer.Option(None, "--attention", help="softmax or linear."),
    patience: Optional[int] = typer.Option(None, "--patience"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = DeviceOpt,
    out: Optional[str] = typer.Option(None, "--out", help="RUN_DIR (default runs/train-…)."),
    resume: Optional[str] = ResumeOpt,
    checkpoint_every: Optional[int] = CheckpointOpt,
    loss: Optional[str] = LossOpt,
    negatives: Optional[int] = NegativesOpt,
    precision: Optional[str] = PrecisionOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the final metrics as one JSON object."),
) -> None:
    """Train a dense backbone with early stopping on validation NDCG@10."""
    from compress.engine.progress import RichReporter
    from compress.app.recipes import resolve_options
    from compress.app.jobs import train_run

    flags = dict(backbone=backbone, data=data, data_dir=data_dir, format=format, user_col=user_col,
                 item_col=item_col, time_col=time_col, sep=sep, epochs=epochs, batch_size=batch_size, lr=lr,
                 dropout=dropout, seq_len=seq_len, hidden=hidden, inner=inner, layers=layers, heads=heads,
                 attention=attention, patience=patience, seed=seed, device=device, checkpoint_every=checkpoint_every,
                 loss=loss, negatives=negatives, precision=precision)
    opts = resolve_options(recipe, flags, set_)
    out = resume_target(resume, out, recipe, flags, set_)
    reporter = RichReporter(err_console)
    try:
        result = train_run(opts, out, overwrite, reporter, resume=resume is not None)
    finally:
        reporter.close()
    print_trained(f"{opts['backbone']} on {result['dataset'].get('users')} users", result, json_out)


@app.command()
@clean_errors
def evaluate(
    path: str = typer.Argument(..., help="RUN_DIR or MODEL_DIR."),
    data: Optional[str] = DataOpt,
    data_dir: Optional[str] = DataDirOpt,
    format: Optional[str] = FormatOpt,
    protocol: str = typer.Option("full", "--protocol", help="full, pop100 or uni100."),
    split: str = typer.Option("test", "--split", help="valid or test."),
    k: int = typer.Option(10, "--k"),
    seed: int = typer.Option(2024, "--seed", help="Seed of the negative sampling."),
    device: Optional[str] = DeviceOpt,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Recall, MRR and NDCG @k of a saved model on the leave-one-out split."""
    from compress.app.recipes import resolve_options
    from compress.app.jobs import evaluate_path

    opts = resolve_options(None, dict(data=data, data_dir=data_dir, format=format, seed=seed, device=device))
    result = evaluate_path(path, opts, split, protocol, k)
    if json_out:
        print(json.dumps(result))
        return
    out_console.print(metrics_table(f"{path} ({result['model']['params']:,} params)",
                                    {f"{split}/{protocol}": result["metrics"]}))


@app.command()
@clean_errors
def search(
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Registered backbone: sasrec or bert4rec."),
    data: Optional[str] = DataOpt,
    data_dir: Optional[str] = DataDirOpt,
    format: Optional[str] = FormatOpt,
    recipe: Optional[str] = RecipeOpt,
    set_: List[str] = SetOpt,
    tradeoff: Optional[float] = typer.Option(None, "--tradeoff", help="λ of the FLOPs penalty (paper 0.1)."),
    max_flops: Optional[str] = typer.Option(None, "--max-flops", help="Hard budget: '50%' of the full "
                                            "supernet or absolute FLOPs; the decision is guaranteed to fit."),
    search_epochs: Optional[int] = typer.Option(None, "--search-epochs"),
    arch_every: Optional[int] = typer.Option(None, "--arch-every", help="f: α/β step every f weight steps."),
    penalty: Optional[str] = typer.Option(None, "--penalty", help="dnsrec: CE + λ·L_RC (paper); proxyless: "
                                          "CE·(log F / log F_ref)^0.6, F_ref = --max-flops or the full model."),
    selection: Optional[str] = typer.Option(None, "--selection", help="gumbel (paper) or softmax (code)."),
    arch_batches: Optional[str] = typer.Option(None, "--arch-batches", help="valid (paper) or train (code)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Search batch size."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    dropout: Optional[float] = typer.Option(None, "--dropout"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len"),
    hidden: Optional[int] = typer.Option(None, "--hidden"),
    inner: Optional[int] = typer.Option(None, "--inner"),
    layers: Optional[int] = typer.Option(None, "--layers"),
    heads: Optional[int] = typer.Option(None, "--heads"),
    attention: Optional[str] = typer.Option(None, "--attention", help="linear (DNS-Rec) or softmax."),
    gate_layers: Optional[int] = typer.Option(None, "--gate-layers", help="L_d; 0 = no data-aware gates."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    device: Optional[str] = DeviceOpt,
    resume: Optional[str] = ResumeOpt,
    checkpoint_every: Optional[int] = CheckpointOpt,
    loss: Optional[str] = LossOpt,
    negatives: Optional[int] = NegativesOpt,
    precision: Optional[str] = PrecisionOpt,
    init: Optional[str] = typer.Option(None, "--init", help="Warm start from a trained RUN_DIR or MODEL_DIR "
                                       "(its shape and weights; the searched design is injected)."),
    reorder: Optional[str] = typer.Option(None, "--reorder", help="Order channels by importance before the "
                                          "search: magnitude or taylor (scores unchanged)."),
    stage: str = typer.Option("all", "--stage", help="search, retrain (an existing --out) or all."),
    retrain_epochs: Optional[int] = typer.Option(None, "--retrain-epochs", help="Epochs of the retraining stage."),
    retrain_batch_size: Optional[int] = typer.Option(None, "--retrain-batch-size"),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Retrain from fresh weights (official code) "
                                      "instead of transferring the supernet's (paper)."),
    out: Optional[str] = typer.Option(None, "--out", help="RUN_DIR (default runs/search-…)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """DNS-Rec: search width and depth under a FLOPs penalty, then retrain the sliced model.

    RUN_DIR gets arch.json, search_card.json, supernet/ and (stage retrain/all) retrained/."""
    from compress.store.artifacts import RETRAINED
    from compress.engine.checkpoint import partial_dir
    from compress.errors import ConfigError
    from compress.engine.progress import SearchReporter
    from compress.app.recipes import resolve_options
    from compress.app.jobs import search_run

    if stage not in ("search", "retrain", "all"):
        raise ConfigError(f"unknown --stage {stage!r}; choose search, retrain or all")
    if stage == "retrain":
        if out is None:
            raise ConfigError("--stage retrain needs --out pointing at a finished search RUN_DIR")
        return _retrain(out, retrain_epochs, retrain_batch_size, from_scratch, overwrite, json_out)

    flags = dict(backbone=backbone, data=data, data_dir=data_dir, format=format, tradeoff=tradeoff,
                 max_flops=max_flops, search_epochs=search_epochs, arch_every=arch_every, selection=selection,
                 penalty=penalty,
                 arch_batches=arch_batches, search_batch_size=batch_size, lr=lr, dropout=dropout, seq_len=seq_len,
                 hidden=hidden, inner=inner, layers=layers, heads=heads, attention=attention,
                 gate_layers=gate_layers, seed=seed, device=device, init=init, reorder=reorder,
                 checkpoint_every=checkpoint_every, loss=loss, negatives=negatives,
                 precision=precision)
    opts = resolve_options(recipe, flags, set_, command="search")
    out = resume_target(resume, out, recipe, flags, set_)
    if resume is not None and not os.path.exists(partial_dir(resume)) and \
            os.path.exists(partial_dir(os.path.join(resume, RETRAINED))):  # the search finished, its retrain did not
        result = _retrain_result(resume, None, None, False, False, resume=True)
        return print_trained("retrained (resumed)", result, json_out)
    reporter = SearchReporter(err_console)
    try:
        result = search_run(opts, out, overwrite, reporter, resume=resume is not None)
    finally:
        reporter.close()
    if json_out:
        if stage == "all":  # both stages in the one JSON object
            result["retrain"] = _retrain_result(result["out"], retrain_epochs, retrain_batch_size, from_scratch, False)
        print(json.dumps(result))
        return
    d = result["decision"]
    arch = d["arch"]
    out_console.print(f"decision: hidden {arch['hidden']}, inner {arch['inner']}, {arch['heads']} heads, "
                      f"{arch['layers']} layers, {arch['attention']} attention, gates L_d={arch['gate_layers']}")
    out_console.print(f"FLOPs {d['flops']:.4g} (measured {d['flops_measured']:.4g}), params {d['params']:,}; "
                      f"valid NDCG@10 of the supernet {result['valid'].get('ndcg@10', float('nan')):.4f}; "
                      f"supernet vs sliced max |diff| {result['slice_max_abs_diff']:.2e}")
    if d.get("note"):
        out_console.print(d["note"])
    out_console.print(f"saved to {result['out']}")
    if stage == "all":
        _retrain(result["out"], retrain_epochs, retrain_batch_size, from_scratch, False, False)


def _retrain_result(run_dir: str, epochs: Optional[int], batch_size: Optional[int], from_scratch: bool,
                    overwrite: bool, resume: bool = False, gate_layers: Optional[int] = None) -> dict:
    from compress.engine.progress import RichReporter
    from compress.app.jobs import retrain_run

    reporter = RichReporter(err_console)
    try:
        return retrain_run(run_dir, {"epochs": epochs, "batch_size": batch_size, "gate_layers": gate_layers},
                           from_scratch, overwrite, reporter, resume)
    finally:
        reporter.close()


def _retrain(run_dir: str, epochs: Optional[int], batch_size: Optional[int], from_scratch: bool, overwrite: bool,
             json_out: bool, resume: bool = False, gate_layers: Optional[int] = None) -> None:
    result = _retrain_result(run_dir, epochs, batch_size, from_scratch, overwrite, resume, gate_layers)
    print_trained(f"retrained {'from scratch' if from_scratch else 'with transferred weights'}", result, json_out)


@app.command()
@clean_errors
def retrain(
    run_dir: str = typer.Argument(..., help="A finished search RUN_DIR."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    from_scratch: bool = typer.Option(False, "--from-scratch"),
    gate_layers: Optional[int] = typer.Option(None, "--gate-layers",
                                              help="Retrain with gates of this depth; 0 removes them (Table 6, "
                                                   "retrain only). Default: the search's."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing RUN_DIR/retrained."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted retrain (RUN_DIR/retrained.partial/)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Retrain the decided architecture of a search run (weights transferred unless --from-scratch)."""
    _retrain(run_dir, epochs, batch_size, from_scratch, overwrite, json_out, resume, gate_layers)


@app.command()
@clean_errors
def export(
    run_dir: str = typer.Argument(..., help="A train RUN_DIR or a retrained search RUN_DIR."),
    out: str = typer.Option(..., "--out", help="MODEL_DIR to write."),
    format: str = typer.Option("safetensors", "--format", help="safetensors, torchscript or onnx."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Write a dense, physically smaller MODEL_DIR: config.json, model.safetensors, items.json, card.json."""
    from compress.app.jobs import export_run

    result = export_run(run_dir, out, format, overwrite)
    if json_out:
        print(json.dumps(result))
        return
    card = result["card"]
    out_console.print(f"exported {card['arch']['hidden']}/{card['arch']['inner']} x {card['arch']['layers']} "
                      f"layers, {card['params']:,} params, {card['flops']['measured']:.4g} FLOPs to {result['out']}")


@app.command()
@clean_errors
def recommend(
    model_dir: str = typer.Argument(..., help="MODEL_DIR from `compress export`."),
    history: str = typer.Option(..., "--history", help="Comma-separated raw item ids, oldest first."),
    k: int = typer.Option(10, "--k"),
    keep_seen: bool = typer.Option(False, "--keep-seen", help="Allow items already in the history."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Top-k next items for one history of raw item ids."""
    import warnings

    import compress

    model = compress.load(model_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = model.recommend([[t.strip() for t in history.split(",") if t.strip()]], k, not keep_seen)[0]
    for w in caught:
        err_console.print(f"warning: {w.message}")
    if json_out:
        print(json.dumps([{"item": i, "score": s} for i, s in recs]))
        return
    table = Table(title=f"top-{k} for history {history}")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    for r, (item, score) in enumerate(recs, 1):
        table.add_row(str(r), item, f"{score:.4f}")
    out_console.print(table)


@app.command()
@clean_errors
def flops(
    path: str = typer.Argument(..., help="MODEL_DIR or RUN_DIR."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Analytic and FlopCounterMode FLOPs (2 x multiply-adds) of one length-N history, and parameters."""
    import compress
    from compress.measure.flops import measured_flops, model_flops, params_count

    model = compress.load(path)
    analytic = model_flops(model)
    measured = measured_flops(model, model.max_len)
    result = {"arch": model.arch.to_dict(), "analytic": analytic, "measured": measured,
              "matmul_agreement": measured / analytic["matmul"], "params": params_count(model)}
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"{path}: FLOPs of one history of length {model.max_len}")
    table.add_column("term")
    table.add_column("FLOPs", justify="right")
    for key, val in analytic.items():
        table.add_row(f"analytic {key}", f"{val:,}")
    table.add_row("measured (FlopCounterMode)", f"{measured:,}")
    table.add_row("parameters", f"{result['params']:,}")
    out_console.print(table)


@app.command()
@clean_errors
def bench(
    model_dir: str = typer.Argument(..., help="MODEL_DIR or RUN_DIR to measure."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="RUN_DIR/MODEL_DIR of the uncompressed backbone."),
    batch: str = typer.Option("1,256", "--batch", help="Comma-separated batch sizes."),
    repeats: int = typer.Option(30, "--repeats", help="Timed repeats (median reported) after 5 warm-ups."),
    device: Optional[str] = DeviceOpt,
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """FLOPs (analytic and measured), parameters, peak inference memory and latency, side by side with a baseline."""
    from compress.measure.cost import compare

    try:
        batches = [int(b) for b in batch.split(",") if b.strip()]
    except ValueError:
        from compress.errors import ConfigError

        raise ConfigError(f"--batch expects comma-separated integers like 1,256, got {batch!r}") from None
    result = compare(model_dir, baseline, batches, repeats, device or "auto")
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"inference cost on {result['device']} ({result['threads']} threads)")
    table.add_column("metric")
    names = list(result["models"])
    for name in names:
        table.add_column(name, justify="right")
    if len(names) == 2:
        table.add_column("ratio (baseline / model)", justify="right")
    for metric in result["rows"]:
        vals = [result["models"][n][metric] for n in names]
        cells = [f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" for v in vals]
        if len(names) == 2:
            cells.append(f"{vals[1] / vals[0]:.2f}x" if vals[0] else "-")
        table.add_row(metric, *cells)
    out_console.print(table)


@app.command()
@clean_errors
def inspect(
    path: str = typer.Argument(..., help="RUN_DIR or MODEL_DIR."),
    plot: bool = typer.Option(False, "--plot", help="Write PNGs (α/β over epochs, candidates' FLOPs) into PATH."),
) -> None:
    """A summary of a run or model: architecture, decision, α/β history, metrics, FLOPs, files."""
    import os

    from compress.files import read_json

    from compress.store.artifacts import load_config

    cfg = load_config(path)
    out_console.print(f"[bold]{path}[/bold]  kind: {cfg.get('kind')}")
    card_path = os.path.join(path, "search_card.json")
    if os.path.exists(card_path):
        card = read_json(card_path)
        d = card["decision"]
        out_console.print(f"decision: {d['arch']}  FLOPs {d['flops']:.4g} "
                          f"({100 * d['flops'] / card['full_flops']:.1f}% of the full supernet), best epoch {card['best_epoch']}")
        hist = Table(title="search history")
        for col in ("epoch", "tau", "p (width)", "q (depth)", "decision", "valid ndcg@10"):
            hist.add_column(col)
        for row in card["history"]:
            hist.add_row(str(row["epoch"]), f"{row['tau']:.4f}", " ".join(f"{v:.2f}" for v in row["p"]),
                         " ".join(f"{v:.2f}" for v in row["q"]), str(row["decision"]), f"{row['valid_ndcg@10']:.4f}")
        out_console.print(hist)
        if plot:
            from compress.app.plots import plot_run

            for png in plot_run(path, card):
                out_console.print(f"wrote {png}")
    elif plot:
        from compress.errors import ConfigError

        raise ConfigError(f"{path} has no search_card.json to plot; --plot works on search RUN_DIRs")
    for sub in ("", "retrained"):
        metrics = os.path.join(path, sub, "metrics.json")
        if os.path.exists(metrics):
            out_console.print(metrics_table(f"metrics ({sub or 'model'})", read_json(metrics)["metrics"]))
    card_json = os.path.join(path, "card.json")
    if os.path.exists(card_json):
        card = read_json(card_json)
        out_console.print(f"arch {card['arch']}, params {card['params']:,}, FLOPs {card['flops']['measured']:,}")
    for root, _, files in os.walk(path):
        for f in sorted(files):
            full = os.path.join(root, f)
            out_console.print(f"  {os.path.relpath(full, path):<40} {os.path.getsize(full):>12,} bytes")


@app.command("backbones")
def backbones_cmd() -> None:
    """List registered backbones, each with the first line of its description."""
    from compress.backbones import get_backbone, list_backbones

    for name in list_backbones():
        doc = (get_backbone(name).__doc__ or "").strip().splitlines()
        print(f"{name:<12} {doc[0] if doc else ''}".rstrip())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
