"""The ``compress`` command line (typer): parse, run a job, print. Every run option comes from
``compress.app.options`` (one definition each: type, default, range, help); every bad input ends in
one line on stderr and exit code 2. Nothing here imports torch until a command runs."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import sys
from inspect import Parameter, Signature, signature
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from compress.app.options import METAVARS, options_for
from compress.errors import CompressError, Interrupted

out_console = Console()
err_console = Console(stderr=True)


ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class Commands(TyperGroup):
    """The command group, with the parser's usage errors (an unknown command or flag, a missing
    argument) in one line too, like every other error."""
    argv: List[str] = ["compress"]  # the command line running now: cards record what wrote them

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        given = kwargs.get("args", args[0] if args else None)  # the parser reads sys.argv when none are given
        Commands.argv = ["compress", *map(str, sys.argv[1:] if given is None else given)]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `compress` alone: the help
                print(ctx.get_help())
            else:
                hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
                message = escape(printable(exc.format_message().rstrip(".")))
                err_console.print(f"[red]error:[/red] {message}{hint}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("interrupted")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True,
                  help="DNS-Rec compression for sequential recommenders: train, search, export, evaluate.")


def printable(text: str) -> str:
    """Text from data (item ids, paths) as the terminal may show it: control characters escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def cli_words(message: str, command: str) -> str:
    """A library message as the command line says it: an option named `key` becomes its flag."""
    from compress.app.options import BY_KEY

    def flag(match: "re.Match") -> str:
        key = match.group(1)
        return BY_KEY[key].flag(command) if key in BY_KEY else "--" + key.replace("_", "-")
    return re.sub(r"`([a-z_]+)`", flag, message)


def clean_errors(fn: Callable) -> Callable:
    """Turn the library's typed errors into a one-line message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from compress.files import published
        from compress.runtime import distributed
        from compress.runtime.allocator import tune_allocator
        from compress.store.provenance import invoked_as

        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
        tune_allocator()
        terminate = as_interrupt(signal.SIGTERM)  # a preemption stops a command as Ctrl-C does, with its message
        earlier = len(published())  # what earlier commands of this process published is not this one's
        try:
            distributed.init_from_env()  # under torchrun: join the process group
            with quiet_unless_main(), invoked_as(Commands.argv):  # model cards record the command that made them
                return fn(*args, **kwargs)
        except Interrupted as exc:  # SIGINT: a checkpoint was written; the shell convention for Ctrl-C
            if distributed.is_main():  # every rank stops at the same step and would say the same
                err_console.print(escape(printable(cli_words(str(exc), fn.__name__))), highlight=False, soft_wrap=True)
            raise typer.Exit(130)
        except CompressError as exc:  # under torchrun every rank says it: the others name themselves
            who = "" if distributed.is_main() else f"(rank {distributed.rank()}) "
            err_console.print(f"[red]error:[/red] {who}{escape(printable(cli_words(str(exc), fn.__name__)))}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            done = published()[earlier:]
            err_console.print(f"interrupted; {escape(printable(done[-1]))} was written whole before the stop" if done
                              else "interrupted; nothing was written")
            raise typer.Exit(130)
        except OSError as exc:  # the disk, not the input: full, read-only, gone
            where = f"{printable(str(exc.filename))}: " if exc.filename else ""
            err_console.print(f"[red]error:[/red] {escape(where)}{escape(exc.strerror or str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2)
        except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeErrors of their own
            if isinstance(exc, RuntimeError) and not out_of_memory(exc):
                raise
            err_console.print("[red]error:[/red] out of memory; lower the batch size or the model size",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        finally:
            distributed.shutdown()
            if terminate is not None:
                signal.signal(signal.SIGTERM, terminate)
    return wrapper


def as_interrupt(signum: int) -> Any:
    """Have ``signum`` raise KeyboardInterrupt, as SIGINT does; returns the handler to restore (None
    outside the main thread, where handlers cannot be set)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signum, signal.default_int_handler)


def out_of_memory(exc: RuntimeError) -> bool:
    """Whether torch failed to allocate: CUDA's OutOfMemoryError, or the CPU allocator's message."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(exc) or \
        "out of memory" in str(exc)


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


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return "none" if value is None else str(value)


def with_options(command: str) -> Callable:
    """Give ``command`` every option the schema lists for it, as flags (defaults shown in --help);
    the decorated function receives them as ``flags``, a dict of the values given (None: not given)."""
    def deco(fn: Callable) -> Callable:
        params = [p for p in signature(fn).parameters.values() if p.name != "flags"]
        opts = options_for(command)
        for o in opts:
            flag = o.flag(command)
            decls = [f"{flag}/--no-{flag[2:]}"] if o.kind == "bool" else [flag]
            option = typer.Option(None, *decls, help=o.help, show_default=_shown(o.default_for(command)),
                                  metavar=METAVARS.get(o.kind), rich_help_panel=o.panel_for(command))
            params.append(Parameter(o.key, Parameter.KEYWORD_ONLY, default=option,
                                            annotation=Optional[bool] if o.kind == "bool" else Optional[str]))

        @functools.wraps(fn)
        def wrapper(**kwargs):
            flags = {o.key: kwargs.pop(o.key) for o in opts}
            return fn(flags=flags, **kwargs)
        wrapper.__signature__ = Signature(params)
        return wrapper
    return deco


RecipeOpt = typer.Option(None, "--recipe", help="YAML recipe; flags and --set override it.")
SetOpt = typer.Option([], "--set", help="Override any recipe key: --set key=value (repeatable).")
ResumeOpt = typer.Option(None, "--resume", help="Continue the interrupted run RUN_DIR (its RUN_DIR.partial/ "
                         "checkpoint, or the stage left) with its saved options.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output that compress wrote.")
JsonOpt = typer.Option(False, "--json", help="Print the result as one JSON object.")


def resume_target(command: str, resume: Optional[str], out: Optional[str], recipe: Optional[str], flags: dict,
                  set_: list):
    """The RUN_DIR to write: ``--resume``'s (which takes no other run options) or ``--out``."""
    from compress.app.options import BY_KEY
    from compress.errors import ConfigError

    if resume is None:
        return out
    given = sorted(BY_KEY[k].flag(command) for k, v in flags.items() if v is not None) + \
        (["--recipe"] if recipe else []) + (["--set"] if set_ else [])
    if given or (out is not None and out != resume):
        raise ConfigError(f"--resume continues {resume} with its saved options; drop {', '.join(given) or '--out'}")
    return resume


def check_recipe_out(out: Optional[str], overwrite: bool, recipe: Optional[str]) -> None:
    """Refuse an output that is, holds or lies in the recipe file: `--overwrite` would delete it."""
    from compress.files import check_out_dir

    if out is not None and recipe is not None:
        check_out_dir(out, overwrite, [recipe])


def metrics_table(title: str, rows: dict) -> Table:
    table = Table(title=title)
    table.add_column("split/protocol")
    names = [m for m in next(iter(rows.values()), {}) if "@" in m]
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
    out_console.print(f"saved to {escape(printable(result['out']))}")


@contextlib.contextmanager
def reporting(kind: str):
    """The live view of a training (``train``) or search (``search``) stage, closed however it ends."""
    from compress.engine.progress import RichReporter, SearchReporter

    reporter = (SearchReporter if kind == "search" else RichReporter)(err_console)
    try:
        yield reporter
    finally:
        reporter.close()


@app.command()
@clean_errors
@with_options("train")
def train(flags: dict, recipe: Optional[str] = RecipeOpt, set_: List[str] = SetOpt,
          out: Optional[str] = typer.Option(None, "--out", help="RUN_DIR (default runs/train-…)."),
          resume: Optional[str] = ResumeOpt, overwrite: bool = OverwriteOpt, json_out: bool = JsonOpt) -> None:
    """Train a dense backbone with early stopping on validation NDCG@10."""
    from compress.app.jobs import train_run
    from compress.app.recipes import resolve_options, taken_by

    opts = taken_by("train", resolve_options("train", recipe, flags, set_))
    out = resume_target("train", resume, out, recipe, flags, set_)
    check_recipe_out(out, overwrite, recipe)
    with reporting("train") as reporter:
        result = train_run(opts, out, overwrite, reporter, resume=resume is not None)
    print_trained(f"{opts['backbone']} on {result['dataset'].get('users')} users", result, json_out)


@app.command()
@clean_errors
@with_options("evaluate")
def evaluate(flags: dict, path: str = typer.Argument(..., help="RUN_DIR or MODEL_DIR."),
             json_out: bool = JsonOpt) -> None:
    """Recall, MRR and NDCG @k of a saved model on the leave-one-out split."""
    from compress.app.jobs import evaluate_run

    result = evaluate_run(path, flags)
    if json_out:
        print(json.dumps(result))
        return
    out_console.print(metrics_table(f"{escape(printable(path))} ({result['model']['params']:,} params)",
                                    {f"{result['split']}/{result['protocol']}": result["metrics"]}))


def flops_words(total: float, matmul: float) -> str:
    """One model's FLOPs as every command says them: the analytic total that budgets count, then its
    matrix products as FlopCounterMode measured them (the elementwise rest is an estimate)."""
    return f"{total:.4g} (matrix products {matmul:.4g}, measured)"


def card_flops(card: dict) -> dict:
    """``flops_words``' arguments from a model card."""
    return {"total": card["flops"]["analytic"]["total"], "matmul": card["flops"]["measured"]}


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n is 1: ``1 head``, ``2 layers``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def print_decision(result: dict) -> None:
    d = result["decision"]
    arch = d["arch"]
    out_console.print(f"decision: hidden {arch['hidden']}, inner {arch['inner']}, {counted(arch['heads'], 'head')}, "
                      f"{counted(arch['layers'], 'layer')}, {arch['attention']} attention, "
                      f"gates L_d={arch['gate_layers']}")
    out_console.print(f"FLOPs {flops_words(d['flops'], d['flops_measured'])}, params {d['params']:,}; "
                      f"valid NDCG@10 of the supernet {result['valid'].get('ndcg@10', float('nan')):.4f}; "
                      f"supernet vs sliced max |diff| {result['slice_max_abs_diff']:.2e}")
    if d.get("note"):
        out_console.print(d["note"])
    out_console.print(f"saved to {escape(printable(result['out']))}")


@app.command()
@clean_errors
@with_options("search")
def search(flags: dict, recipe: Optional[str] = RecipeOpt, set_: List[str] = SetOpt,
           stage: Optional[str] = typer.Option(None, "--stage", help="search, retrain (an existing --out, with the "
                                               "options `compress retrain` takes) or all (the default; a --resume "
                                               "runs the stage the run was started with)."),
           out: Optional[str] = typer.Option(None, "--out", help="RUN_DIR (default runs/search-…)."),
           resume: Optional[str] = ResumeOpt, overwrite: bool = OverwriteOpt, json_out: bool = JsonOpt) -> None:
    """DNS-Rec: search width and depth under a FLOPs penalty, then retrain the sliced model.

    RUN_DIR gets config.json, arch.json, search_card.json, metrics.csv, supernet/ and (stage retrain/all) retrained/."""
    from compress.app.jobs import dnsrec_run, retrain_run, search_run
    from compress.app.orientation import RETRAIN_FROM
    from compress.app.recipes import resolve_options, retrain_overrides
    from compress.errors import ConfigError

    if stage is None:
        from compress.app.rundirs import recorded_stage

        stage = (recorded_stage(resume) if resume is not None else None) or "all"
    if stage not in ("search", "retrain", "all"):
        raise ConfigError(f"unknown --stage {stage!r}; choose search, retrain or all")
    out = resume_target("search", resume, out, recipe, flags, set_)
    if stage == "retrain":  # `compress retrain --out`, with a recipe and --set besides the flags
        if out is None:
            raise ConfigError("--stage retrain needs --out pointing at a finished search RUN_DIR")
        overrides = retrain_overrides("search", recipe, flags, set_)
        with reporting("train") as reporter:
            result = retrain_run(out, overrides, overwrite, reporter, resume is not None)
        return print_trained(f"retrained {RETRAIN_FROM[result['start']]}", result, json_out)
    opts = resolve_options("search", recipe, flags, set_)
    check_recipe_out(out, overwrite, recipe)
    if stage == "search":
        with reporting("search") as reporter:
            result = search_run(opts, out, overwrite, reporter, resume=resume is not None)
        return print(json.dumps(result)) if json_out else print_decision(result)
    with contextlib.ExitStack() as stack:
        result = dnsrec_run(opts, out, overwrite, lambda s: stack.enter_context(reporting(s)), resume is not None,
                            on_search=None if json_out else print_decision)
    if json_out:
        print(json.dumps(result))
        return
    retrained = result["retrain"]
    print_trained(f"retrained {RETRAIN_FROM[retrained['start']]}", retrained, False)


@app.command()
@clean_errors
@with_options("retrain")
def retrain(flags: dict, run_dir: str = typer.Argument(..., help="A finished search RUN_DIR."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing RUN_DIR/retrained."),
            resume: bool = typer.Option(False, "--resume",
                                        help="Continue an interrupted retrain (RUN_DIR/retrained.partial/)."),
            json_out: bool = JsonOpt) -> None:
    """Retrain the decided architecture of a search run (the supernet's weights, unless --from-scratch or
    --from-init)."""
    from compress.app.jobs import retrain_run
    from compress.app.orientation import RETRAIN_FROM
    from compress.app.recipes import retrain_overrides

    overrides = retrain_overrides("retrain", None, flags)
    with reporting("train") as reporter:
        result = retrain_run(run_dir, overrides, overwrite, reporter, resume)
    print_trained(f"retrained {RETRAIN_FROM[result['start']]}", result, json_out)


@app.command()
@clean_errors
def export(run_dir: str = typer.Argument(..., help="A train RUN_DIR or a retrained search RUN_DIR."),
           out: str = typer.Option(..., "--out", help="MODEL_DIR to write."),
           format: str = typer.Option("safetensors", "--format", help="Export format: safetensors, torchscript or "
                                      "onnx."),
           overwrite: bool = OverwriteOpt, json_out: bool = JsonOpt) -> None:
    """Write a dense, physically smaller MODEL_DIR: config.json, model.safetensors, items.json, card.json, README.md."""
    from compress.app.jobs import export_run

    result = export_run(run_dir, out, format, overwrite)
    if json_out:
        print(json.dumps(result))
        return
    card = result["card"]
    out_console.print(f"exported {card['arch']['hidden']}/{card['arch']['inner']} x "
                      f"{counted(card['arch']['layers'], 'layer')}, {card['params']:,} params, "
                      f"FLOPs {flops_words(**card_flops(card))} to "
                      f"{escape(printable(result['out']))}")


@app.command()
@clean_errors
@with_options("recommend")
def recommend(
    flags: dict,
    model_dir: str = typer.Argument(..., help="MODEL_DIR from `compress export`."),
    history: str = typer.Option(..., "--history", help="Comma-separated raw item ids, oldest first."),
    top: int = typer.Option(10, "--k", help="How many items to recommend."),
    keep_seen: bool = typer.Option(False, "--keep-seen", help="Allow items already in the history."),
    json_out: bool = JsonOpt,
) -> None:
    """Top-k next items for one history of raw item ids."""
    import warnings

    import compress
    from compress.app.recipes import resolve_options

    recommender = compress.Recommender.load(model_dir, device=resolve_options("recommend", None, flags)["device"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = recommender.recommend([[t.strip() for t in history.split(",") if t.strip()]], top, not keep_seen)[0]
    for w in caught:
        err_console.print(f"warning: {escape(printable(str(w.message)))}", highlight=False)
    by = "popularity" if any(issubclass(w.category, compress.PopularityFallback) for w in caught) else "model"
    if json_out:
        print(json.dumps([{"item": i, "score": s, "by": by} for i, s in recs]))
        return
    table = Table(title=f"top-{top} for history {escape(printable(history))}")
    table.add_column("rank", justify="right")
    table.add_column("item")
    table.add_column("interactions" if by == "popularity" else "score", justify="right")
    for r, (item, score) in enumerate(recs, 1):
        table.add_row(str(r), escape(printable(item)), f"{score:.4f}")
    out_console.print(table)


@app.command()
@clean_errors
def flops(
    path: str = typer.Argument(..., help="MODEL_DIR or RUN_DIR."),
    json_out: bool = JsonOpt,
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
    table = Table(title=f"{escape(printable(path))}: FLOPs of one history of length {model.max_len}")
    table.add_column("term")
    table.add_column("FLOPs", justify="right")
    for key, val in analytic.items():
        table.add_row(f"analytic {key}", f"{val:,}")
    table.add_row("measured (FlopCounterMode)", f"{measured:,}")
    out_console.print(table)
    out_console.print(f"parameters {result['params']:,}")  # a count, not FLOPs: below the table


@app.command()
@clean_errors
@with_options("bench")
def bench(flags: dict, model_dir: str = typer.Argument(..., help="MODEL_DIR or RUN_DIR to measure."),
          baseline: Optional[str] = typer.Option(None, "--baseline", help="RUN_DIR/MODEL_DIR of the uncompressed "
                                                 "backbone."),
          json_out: bool = JsonOpt) -> None:
    """FLOPs (analytic and measured), parameters, peak inference memory and latency, side by side with a baseline."""
    from compress.app.jobs import bench_run
    from compress.app.recipes import resolve_options

    result = bench_run(model_dir, baseline, resolve_options("bench", None, flags))
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
        table.add_row(metric.replace("peak_memory_MB", "peak_memory_MiB"), *cells)  # the key's unit is 2^20 bytes
    out_console.print(table)


@app.command()
@clean_errors
def inspect(
    path: str = typer.Argument(..., help="RUN_DIR or MODEL_DIR."),
    plot: bool = typer.Option(False, "--plot", help="Write PNGs (α/β over epochs, candidates' FLOPs) into PATH."),
) -> None:
    """A summary of a run or model: architecture, decision, α/β history, metrics, FLOPs, files."""
    from compress.files import read_json
    from compress.layout import CARD, CONFIG, METRICS, RETRAINED, SEARCH_CARD
    from compress.store.artifacts import check_format, load_config

    cfg = load_config(path)
    check_format(cfg, os.path.join(path, CONFIG))
    out_console.print(f"[bold]{escape(printable(path))}[/bold]  kind: {escape(printable(str(cfg.get('kind'))))}")
    card_path = os.path.join(path, SEARCH_CARD)
    if os.path.exists(card_path):
        with written_by_compress(card_path):
            search_card = read_json(card_path)
            print_search_card(search_card)
    elif plot:
        from compress.errors import ConfigError

        raise ConfigError(f"{path} has no search_card.json to plot; --plot works on search RUN_DIRs")
    for sub in ("", RETRAINED):
        metrics = os.path.join(path, sub, METRICS)
        if os.path.exists(metrics):
            with written_by_compress(metrics):
                out_console.print(metrics_table(f"metrics ({sub or 'model'})", read_json(metrics)["metrics"]))
    card_json = os.path.join(path, CARD)
    if os.path.exists(card_json):
        with written_by_compress(card_json):
            card = read_json(card_json)
            out_console.print(f"arch {card['arch']}, params {card['params']:,}, "
                              f"FLOPs {flops_words(**card_flops(card))}")
    if plot:  # last, once every artifact has been read: a command that fails writes nothing
        from compress.app.plots import plot_run

        with written_by_compress(card_path):
            for png in plot_run(path, search_card):
                out_console.print(f"wrote {escape(printable(png))}")
    for root, _, files in os.walk(path):
        for f in sorted(files):
            full = os.path.join(root, f)
            out_console.print(f"  {escape(printable(os.path.relpath(full, path))):<40} {os.path.getsize(full):>12,} bytes")


@contextlib.contextmanager
def written_by_compress(path: str):
    """Render an artifact compress wrote: a key missing or of another type means it was edited by hand or
    written by another version, which is one line, not a traceback."""
    from compress.errors import CheckpointError
    from compress.files import first_line

    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ArithmeticError) as exc:
        what = f"lacks {exc}" if isinstance(exc, KeyError) else f"holds a value of another kind ({first_line(exc)})"
        raise CheckpointError(f"{path} {what}; the artifact is corrupt or from another version of compress") from None


def shares(flops: float, card: dict) -> str:
    """``flops`` as a share of the dense input model (what budgets refer to by default) and of the full
    supernet; cards written before the input's FLOPs were recorded have the latter only."""
    full = f"{100 * flops / card['full_flops']:.1f}% of the full supernet"
    return f"{100 * flops / card['input_flops']:.1f}% of the input model, {full}" if card.get("input_flops") else full


def print_search_card(card: dict) -> None:
    """The decision and the search's history per epoch."""
    from compress.app.orientation import decided_at, recorded_label
    from compress.arch import ArchSpec
    from compress.store.card import exit_depths

    d = card["decision"]
    arch = ArchSpec.from_dict(d["arch"])
    heads = f" ({counted(arch.heads, 'head')} of {arch.head_dim})" if card.get("head_pruning") == "dims" else ""
    out_console.print(f"decision: {arch.label()}{heads}  FLOPs {d['flops']:.4g} "
                      f"({shares(d['flops'], card)}), {decided_at(card)}")
    hist = Table(title="search history")
    depths = exit_depths(card)
    q_column = f"q (depth {', '.join(map(str, depths))})" if depths else "q (depth)"
    for col in ("epoch", "tau", "p (width)", q_column, "decision", "valid ndcg@10"):
        hist.add_column(col)
    for row in card["history"]:
        hist.add_row(str(row["epoch"]), f"{row['tau']:.4f}", " ".join(f"{v:.2f}" for v in row["p"]),
                     " ".join(f"{v:.2f}" for v in row["q"]), recorded_label(card, row), f"{row['valid_ndcg@10']:.4f}")
    out_console.print(hist)


@app.command("backbones")
def backbones_cmd() -> None:
    """List registered backbones, each with the first line of its description."""
    from compress.backbones import get_backbone, list_backbones

    for name in list_backbones():
        doc = (get_backbone(name).__doc__ or "").strip().splitlines()
        print(f"{name:<12} {doc[0] if doc else ''}".rstrip())


def version_callback(value: bool) -> None:
    if value:
        import compress

        print(f"compress {compress.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """DNS-Rec compression for sequential recommenders: train, search, export, evaluate."""


def main() -> None:
    """The console script. A worker of a distributed run ends without the interpreter's teardown
    (``compress.runtime.launch``), with the exit code the command chose."""
    from compress.runtime.launch import exit_without_teardown, launched

    if not launched():
        try:
            app()
        finally:  # the command has ended and said how: a stop in the interpreter's teardown changes nothing
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
        return
    try:
        app()
        code = 0
    except SystemExit as exc:  # typer ends every command with one
        if isinstance(exc.code, str):  # sys.exit("message"): Python would print it and exit 1
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    exit_without_teardown(code)


if __name__ == "__main__":
    main()
