"""The ``compress`` command line (typer). Every bad input ends in one line on stderr and exit code 2."""
from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from compress.errors import CompressError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="DNS-Rec compression for sequential recommenders: train, search, export, evaluate.")
out_console = Console()
err_console = Console(stderr=True)


def clean_errors(fn: Callable) -> Callable:
    """Turn the library's typed errors into a one-line message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        try:
            return fn(*args, **kwargs)
        except CompressError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted; nothing was written")
            raise typer.Exit(130)
    return wrapper


DataOpt = typer.Option(None, "--data", help="Dataset name (ml-1m, ml-100k, beauty, toys, lastfm, gowalla, "
                       "douban-book), a file or a directory. Default: the embedded Gowalla sample.")
DataDirOpt = typer.Option(None, "--data-dir", help="Where named datasets live (else $COMPRESS_DATA_DIR).")
FormatOpt = typer.Option(None, "--format", help="auto, atomic, ml-dat, udata, delimited or sequence.")
RecipeOpt = typer.Option(None, "--recipe", help="YAML recipe; flags and --set override it.")
SetOpt = typer.Option([], "--set", help="Override any recipe key: --set key=value (repeatable).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu or cuda.")


def metrics_table(title: str, rows: dict) -> Table:
    table = Table(title=title)
    table.add_column("split/protocol")
    names = [m for m in next(iter(rows.values())) if "@" in m]
    for m in names:
        table.add_column(m, justify="right")
    for key, vals in rows.items():
        table.add_row(key, *(f"{vals[m]:.4f}" for m in names))
    return table


@app.command()
@clean_errors
def train(
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Registered backbone (sasrec)."),
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the final metrics as one JSON object."),
) -> None:
    """Train a dense backbone with early stopping on validation NDCG@10."""
    from compress.progress import RichReporter
    from compress.recipes import resolve_options
    from compress.runs import train_run

    flags = dict(backbone=backbone, data=data, data_dir=data_dir, format=format, user_col=user_col,
                 item_col=item_col, time_col=time_col, sep=sep, epochs=epochs, batch_size=batch_size, lr=lr,
                 dropout=dropout, seq_len=seq_len, hidden=hidden, inner=inner, layers=layers, heads=heads,
                 attention=attention, patience=patience, seed=seed, device=device)
    opts = resolve_options(recipe, flags, set_)
    reporter = RichReporter(err_console)
    try:
        result = train_run(opts, out, overwrite, reporter)
    finally:
        reporter.close()
    if json_out:
        print(json.dumps(result))
        return
    out_console.print(metrics_table(f"{opts['backbone']} on {result['dataset'].get('users')} users "
                                    f"(best epoch {result['best_epoch']})", result["metrics"]))
    out_console.print(f"saved to {result['out']}")


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
    from compress.recipes import resolve_options
    from compress.runs import evaluate_path

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
    backbone: Optional[str] = typer.Option(None, "--backbone", help="Registered backbone (sasrec)."),
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
    out: Optional[str] = typer.Option(None, "--out", help="RUN_DIR (default runs/search-…)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """DNS-Rec: search width and depth under a FLOPs penalty; write arch.json, search_card.json, supernet/."""
    from compress.progress import SearchReporter
    from compress.recipes import resolve_options
    from compress.runs import search_run

    flags = dict(backbone=backbone, data=data, data_dir=data_dir, format=format, tradeoff=tradeoff,
                 max_flops=max_flops, search_epochs=search_epochs, arch_every=arch_every, selection=selection,
                 arch_batches=arch_batches, search_batch_size=batch_size, lr=lr, dropout=dropout, seq_len=seq_len,
                 hidden=hidden, inner=inner, layers=layers, heads=heads, attention=attention,
                 gate_layers=gate_layers, seed=seed, device=device)
    opts = resolve_options(recipe, flags, set_, command="search")
    reporter = SearchReporter(err_console)
    try:
        result = search_run(opts, out, overwrite, reporter)
    finally:
        reporter.close()
    if json_out:
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


@app.command("backbones")
def backbones_cmd() -> None:
    """List registered backbones."""
    from compress.backbones import list_backbones

    for name in list_backbones():
        print(name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
