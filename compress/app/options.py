"""Every run option, defined once: type, default, range, help, and the commands that take it.

From this one table come the command line's options (``cli.py`` builds them from it), recipe keys
and ``--set`` (``compress.app.recipes``), and the library's configurations, filled by keyword
(``build``). A default that a configuration holds (``TrainConfig.epochs``, ``ArchSpec.hidden``, ...)
is read from the field the option feeds, so each default is written in one place. Every value is
checked here, before any data is read; errors name the value as its writer gave it (``--epochs``,
``epochs in recipe r.yaml``, ``--set epochs``). This module imports no torch: ``--help`` stays fast.
"""
from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from compress.arch import ATTENTION_KINDS, GATE_PLACEMENTS, HEAD_PRUNING, MAX_GATE_LAYERS, MAX_LAYERS, ArchSpec
from compress.bounds import MAX_SEED
from compress.data.dataset import NUMBERINGS
from compress.data.readers import FORMATS, ReadOptions
from compress.engine.config import LOSSES, MAX_K, MAX_LR, MAX_NEGATIVES, PRECISIONS, TrainConfig
from compress.errors import ConfigError
from compress.nas.config import (
    ARCH_BATCHES,
    DECISIONS,
    FLOPS_REFERENCES,
    MAX_TAU,
    MAX_TRADEOFF,
    MIN_TAU,
    PENALTIES,
    SELECTIONS,
    TAU_SCHEDULES,
    TAU_WHY,
    TRADEOFF_WHY,
    SearchConfig,
    read_budget,
)
from compress.nas.space import MAX_RATIO, MAX_ROUND_TO, SearchSpace

RUNS = ("train", "search")
CONFIGS = {"TrainConfig": TrainConfig, "SearchConfig": SearchConfig, "ArchSpec": ArchSpec,
           "SearchSpace": SearchSpace, "ReadOptions": ReadOptions}
BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
DATASET_NAMES = "ml-1m, ml-100k, beauty, toys, lastfm, gowalla, douban-book, douban-music"
_FIELD = object()  # the default is the fed field's


@dataclass(frozen=True)
class Option:
    """One option. ``kind``: int, float, str, bool, choice, floats, ints or choices (lists) or budget
    (a percentage or a number). ``low``/``high``: inclusive bounds; ``above``: an exclusive lower bound;
    ``why``: what the value does, where the refusal of an out-of-range value needs it to make sense."""

    key: str
    kind: str
    help: str
    commands: Tuple[str, ...]
    feeds: Tuple[str, ...] = ()  # "Config.field" this option fills
    default: Any = _FIELD
    choices: Tuple[str, ...] = ()
    low: Optional[float] = None
    above: Optional[float] = None
    high: Optional[float] = None
    why: str = ""
    nullable: bool = False
    by_command: Dict[str, Any] = field(default_factory=dict)  # command -> its own default
    flags: Dict[str, str] = field(default_factory=dict)  # command -> flag, where not --key-with-dashes
    aliases: Tuple[str, ...] = ()  # other recipe keys for it (RecBole's names)
    recipe: bool = True  # a recipe and --set key; False: the command line only
    panel: str = ""  # the --help section it is listed under
    panels: Dict[str, str] = field(default_factory=dict)  # command -> its own --help section, where not ``panel``

    @property
    def base_default(self) -> Any:
        if self.default is not _FIELD:
            return self.default
        cls_name, name = self.feeds[0].split(".")
        f = next(f for f in fields(CONFIGS[cls_name]) if f.name == name)
        value = f.default if f.default is not MISSING else f.default_factory()
        return list(value) if isinstance(value, tuple) else value

    def default_for(self, command: str) -> Any:
        return self.by_command.get(command, self.base_default)

    def panel_for(self, command: str) -> str:
        return self.panels.get(command, self.panel)

    def flag(self, command: str) -> str:
        return self.flags.get(command, "--" + self.key.replace("_", "-"))

    def feeds_field(self, cls: type) -> Optional[str]:
        """The field of configuration ``cls`` this option fills, if any."""
        for target in self.feeds:
            cls_name, name = target.split(".")
            if CONFIGS[cls_name] is cls:
                return name
        return None

    def parse(self, value: Any, name: str) -> Any:
        """``value`` (from YAML, or a command-line string) as this option's type, checked; ``name`` is
        how the error names it."""
        null = value is None or (self.nullable and self.kind != "str" and isinstance(value, str)
                                 and value.strip().lower() in ("none", "null"))
        if null:
            if self.nullable:
                return None
            raise ConfigError(f"{name} cannot be empty; give a value or leave it out for its default "
                              f"({self.base_default!r})")
        parsed = PARSERS[self.kind](self, value, name)
        self._check(parsed, name)
        return parsed

    def _check(self, value: Any, name: str) -> None:
        for v in value if isinstance(value, list) else [value]:
            if self.choices and v not in self.choices:
                raise ConfigError(f"{name}: {v!r} is not one of {', '.join(self.choices)}")
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not self._in_range(v):
                why = f"; {self.why}" if self.why else ""
                raise ConfigError(f"{name} must be {self._range_text()}, got {_num(v)}{why}")

    def _in_range(self, v: float) -> bool:
        return (self.low is None or v >= self.low) and (self.above is None or v > self.above) and \
            (self.high is None or v <= self.high)

    def _range_text(self) -> str:
        lower = f"[{_num(self.low)}" if self.low is not None else f"({_num(self.above)}" if self.above is not None \
            else None
        if self.high is None:
            return f">= {_num(self.low)}" if self.low is not None else f"> {_num(self.above)}"
        return f"in {lower or '(-inf'}, {_num(self.high)}]"


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _int(opt: Option, value: Any, name: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{name} expects a whole number, got {value!r}")


def _float(opt: Option, value: Any, name: str) -> float:
    try:
        number = float(value) if isinstance(value, str) or (isinstance(value, (int, float))
                                                            and not isinstance(value, bool)) else None
    except (ValueError, OverflowError):
        number = None
    if number is None:
        raise ConfigError(f"{name} expects a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return number


def _str(opt: Option, value: Any, name: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value)
        if text == "" or "\x00" in text:
            raise ConfigError(f"{name} is empty or holds a NUL byte; give a value")
        return text
    raise ConfigError(f"{name} expects a string, got {value!r}")


def _bool(opt: Option, value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOLS:
        return BOOLS[value.strip().lower()]
    raise ConfigError(f"{name} expects true or false, got {value!r}")


def _name(opt: Option, value: Any, name: str) -> str:
    """A registered name, in any case (``SASRec``)."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} expects a string (a registered name), got {value!r}")
    return _str(opt, value, name).strip().lower()


def _choice(opt: Option, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} expects one of {', '.join(opt.choices)}, got {value!r}")
    return value.strip().lower()


def _list(opt: Option, value: Any, name: str, item) -> list:
    example = {_float: "0,0.5 (or [0.0, 0.5] in a recipe)", _choice: ",".join(opt.choices)}.get(item, "1,256")
    given = value
    if isinstance(value, str):
        value = [v for v in value.strip().strip("[]").split(",") if v.strip()]
    try:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError("")
        return [item(opt, v, name) for v in value]
    except ConfigError:
        raise ConfigError(f"{name} expects a comma-separated list like {example}, got {given!r}") from None


def _budget(opt: Option, value: Any, name: str) -> str:
    text = _str(opt, value, name).strip()
    read_budget(text, name)
    return text


def _device(opt: Option, value: Any, name: str) -> str:
    """auto, cpu, cuda or cuda:N, checked without torch (whether that GPU exists is checked when used)."""
    device = _str(opt, value, name).strip().lower()
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d{1,3}", device):
        raise ConfigError(f"{name}: {value!r} is not a device; choose auto, cpu, cuda or cuda:N")
    return device


PARSERS = {"int": _int, "device": _device, "name": _name, "float": _float, "str": _str, "bool": _bool, "choice": _choice, "budget": _budget,
           "floats": lambda o, v, n: _list(o, v, n, _float), "ints": lambda o, v, n: _list(o, v, n, _int),
           "choices": lambda o, v, n: _list(o, v, n, _choice)}
METAVARS = {"name": "TEXT", "int": "INT", "float": "FLOAT", "str": "TEXT", "choice": "TEXT", "budget": "FLOPS", "device": "DEVICE",
            "floats": "LIST", "ints": "LIST", "choices": "LIST"}

DATA = ("train", "search", "evaluate")
TRAINING = ("train", "search", "retrain")
SEARCHING = ("search",)
EVAL = ("evaluate",)

def _section(panel: str, *options: Option) -> List[Option]:
    return [replace(o, panel=panel) for o in options]


OPTIONS: List[Option] = _section(
    "Data",
    Option("data", "str", f"Dataset name ({DATASET_NAMES}), a file or a directory. Default: the embedded "
           "Gowalla sample.", DATA, default=None, nullable=True),
    Option("data_dir", "str", "Where named datasets live (else $COMPRESS_DATA_DIR).", DATA, default=None,
           nullable=True),
    Option("data_format", "choice", "Format of the data file: auto, atomic, ml-dat, udata, delimited or sequence.",
           DATA, feeds=("ReadOptions.format",), choices=FORMATS, aliases=("format",)),
    Option("user_col", "str", "User column: a header name, or a 0-based position.", DATA,
           feeds=("ReadOptions.user_col",), nullable=True),
    Option("item_col", "str", "Item column: a header name, or a 0-based position.", DATA,
           feeds=("ReadOptions.item_col",), nullable=True),
    Option("time_col", "str", "Timestamp column, or 'none' for file order.", DATA, feeds=("ReadOptions.time_col",),
           nullable=True),
    Option("sep", "str", "Field delimiter (default: detect).", DATA, feeds=("ReadOptions.sep",), nullable=True),
    Option("item_numbering", "choice", "How items are numbered: compress (first appearance in the users' "
           "time-ordered histories, users in file order) or recbole (first appearance in the file, as RecBole "
           "numbers them).", DATA, default="compress",
           choices=NUMBERINGS),
    Option("kcore", "int", "Keep users and items with at least this many interactions (0: no filter).", DATA,
           default=0, low=0),
) + _section(
    "Model",
    Option("backbone", "name", "Registered backbone: sasrec or bert4rec (any case).", RUNS, default="sasrec"),
    Option("hidden", "int", "d: hidden size.", RUNS, feeds=("ArchSpec.hidden",), low=1, aliases=("hidden_size",)),
    Option("inner", "int", "D: FFN inner size.", RUNS, feeds=("ArchSpec.inner",), low=1, aliases=("inner_size",)),
    Option("layers", "int", "L: transformer layers.", RUNS, feeds=("ArchSpec.layers",), low=1, high=MAX_LAYERS,
           aliases=("n_layers",)),
    Option("heads", "int", "Attention heads.", RUNS, feeds=("ArchSpec.heads",), low=1, by_command={"search": 4},
           aliases=("n_heads",)),
    Option("seq_len", "int", "N: keep the last N items of each history.", RUNS, default=50, low=1, high=65536,
           aliases=("MAX_ITEM_LIST_LENGTH",)),
    Option("dropout", "float", "Dropout probability.", RUNS, default=0.2, low=0.0, high=0.99,
           aliases=("hidden_dropout_prob",)),
    Option("attention", "choice", "softmax, or causal linear attention (DNS-Rec's). search: fixes the kind "
           "(default: searched among `attention_choices`).", RUNS, feeds=("ArchSpec.attention",),
           choices=ATTENTION_KINDS, by_command={"search": None}, nullable=True),
    Option("gate_layers", "int", "L_d: depth of each data-aware gate MLP; 0 = no gates. search: fixes it "
           "(the paper: 2; default: searched among `gate_choices`). retrain: default the search's.",
           ("train", "search", "retrain"), feeds=("ArchSpec.gate_layers",), low=0, high=MAX_GATE_LAYERS,
           by_command={"search": None, "retrain": None}),
    Option("gate_placement", "choice", "code: gates on the FFN dense outputs; paper: on their inputs (Eq. 8).", RUNS,
           feeds=("ArchSpec.gate_placement",), choices=GATE_PLACEMENTS),
) + _section(
    "Training",
    Option("epochs", "int", "Training epochs (search: of the retraining stage).", TRAINING,
           feeds=("TrainConfig.epochs",), low=1, flags={"search": "--retrain-epochs"}, aliases=("max_epochs",)),
    Option("batch_size", "int", "Training batch (search: of the retraining stage).", TRAINING,
           feeds=("TrainConfig.batch_size",), low=1, flags={"search": "--retrain-batch-size"},
           aliases=("train_batch_size",)),
    Option("lr", "float", "Adam learning rate of the weights.", TRAINING,
           feeds=("TrainConfig.lr", "SearchConfig.lr"), above=0.0, high=MAX_LR, aliases=("learning_rate",)),
    Option("weight_decay", "float", "Adam weight decay.", TRAINING, feeds=("TrainConfig.weight_decay",), low=0.0,
           high=1.0),
    Option("patience", "int", "Epochs without a validation gain before stopping.", TRAINING,
           feeds=("TrainConfig.patience", "SearchConfig.patience"), low=1, aliases=("stopping_step",)),
    Option("seed", "int", "Seed of initialisation, data order and sampling.", RUNS,
           feeds=("TrainConfig.seed", "SearchConfig.seed"), low=0, high=MAX_SEED),
    Option("device", "device", "auto, cpu, cuda or cuda:N.",
           ("train", "search", "retrain", "evaluate", "bench", "recommend"), default="auto",
           panels={"evaluate": "Evaluation", "bench": "Evaluation", "recommend": "Evaluation"}),
    Option("max_minutes", "float", "Wall-clock budget of a training stage, in minutes.", TRAINING,
           feeds=("TrainConfig.max_minutes",), above=0.0, nullable=True),
    Option("checkpoint_every", "int", "Also checkpoint every N steps (0: only each epoch).", TRAINING, default=0,
           low=0),
    Option("tensorboard", "str", "Also log every epoch's metrics to TensorBoard under this directory "
           "(DIR/RUN/STAGE; needs the tensorboard package).", TRAINING, default=None, nullable=True),
    Option("loss", "choice", "full (softmax over every item), or sampled: uniform, inbatch (logQ-corrected) for "
           "large catalogs.", RUNS, feeds=("TrainConfig.loss", "SearchConfig.loss"), choices=LOSSES),
    Option("negatives", "int", "Negatives per step of a sampled loss.", RUNS,
           feeds=("TrainConfig.negatives", "SearchConfig.negatives"), low=1, high=MAX_NEGATIVES),
    Option("precision", "choice", "fp32, bf16 (CPU or CUDA) or fp16 (CUDA): autocast of the weight steps.", RUNS,
           feeds=("TrainConfig.precision", "SearchConfig.precision"), choices=PRECISIONS),
    Option("compile", "bool", "torch.compile the training forward (pays on a GPU for long runs).", RUNS,
           feeds=("TrainConfig.compile", "SearchConfig.compile")),
) + _section(
    "Search",
    Option("search_epochs", "int", "Epochs of the architecture search.", SEARCHING, feeds=("SearchConfig.epochs",),
           low=1),
    Option("search_batch_size", "int", "Batch of the architecture search.", SEARCHING,
           feeds=("SearchConfig.batch_size",), low=1),
    Option("search_max_minutes", "float", "Wall-clock budget of the search, in minutes.", SEARCHING,
           feeds=("SearchConfig.max_minutes",), above=0.0, nullable=True),
    Option("tradeoff", "float", "λ of the FLOPs penalty (paper 0.1).", SEARCHING, feeds=("SearchConfig.tradeoff",),
           low=0.0, high=MAX_TRADEOFF, why=TRADEOFF_WHY),
    Option("max_flops", "budget", "Hard budget: a percentage of the `flops_reference` model (50%) or absolute "
           "FLOPs; the decision is guaranteed to fit.", SEARCHING, feeds=("SearchConfig.max_flops",), nullable=True),
    Option("flops_reference", "choice", "What max_flops percentages and the penalty refer to: input (the dense "
           "model searched from, softmax and no gates unless warm-started) or supernet (the full supernet, the "
           "paper).", SEARCHING, feeds=("SearchConfig.flops_reference",), choices=FLOPS_REFERENCES),
    Option("attention_choices", "choices", "Attention kinds the search picks from (one fixes it).", SEARCHING,
           feeds=("SearchSpace.attention",), choices=ATTENTION_KINDS),
    Option("gate_choices", "ints", "Gate depths L_d the search picks from, 0 = no gates (one fixes it).",
           SEARCHING, feeds=("SearchSpace.gate_layers",), low=0, high=MAX_GATE_LAYERS),
    Option("depth_choices", "ints", "Exit depths (layer counts) the search picks from; one keeps that depth and "
           "searches widths only, as a channel pruner does; -1 is the model's depth, -2 one fewer (default: every "
           "depth of the model).", SEARCHING, feeds=("SearchSpace.depths",), nullable=True),
    Option("arch_every", "int", "f: an α/β step every f weight steps.", SEARCHING, feeds=("SearchConfig.arch_every",),
           low=1),
    Option("arch_lr", "float", "Adam learning rate of α and β.", SEARCHING, feeds=("SearchConfig.arch_lr",),
           above=0.0, high=MAX_LR),
    Option("selection", "choice", "gumbel (paper) or softmax (official code).", SEARCHING,
           feeds=("SearchConfig.selection",), choices=SELECTIONS),
    Option("arch_batches", "choice", "valid (paper) or train (official code): the batches of the α/β steps.",
           SEARCHING, feeds=("SearchConfig.arch_batches",), choices=ARCH_BATCHES),
    Option("penalty", "choice", "dnsrec: CE + λ·L_RC (paper); budget: CE + λ·|E[F]/max_flops − 1|, the "
           "search fills the budget; proxyless: CE·(log F / log F_ref)^0.6.", SEARCHING,
           feeds=("SearchConfig.penalty",), choices=PENALTIES),
    Option("decide", "choice", "best: decide on the controllers (and keep the supernet) of the best validation "
           "epoch (paper); last: of the last epoch, where a pull to the budget (penalty budget) has run its course.",
           SEARCHING, feeds=("SearchConfig.decide",), choices=DECISIONS),
    Option("recompute", "bool", "Recompute each candidate width's activations in the backward pass instead of "
           "keeping them: a large search space in less memory, for one more forward pass of the layers; the same "
           "computation.",
           SEARCHING, feeds=("SearchConfig.recompute",)),
    Option("hidden_ratios", "floats", "Pruning ratios of d, e.g. 0,0.25,0.5 (0 keeps all).", SEARCHING,
           feeds=("SearchSpace.hidden_ratios",), low=0.0, high=MAX_RATIO),
    Option("inner_ratios", "floats", "Pruning ratios of D, e.g. 0,0.25,0.5.", SEARCHING,
           feeds=("SearchSpace.inner_ratios",), low=0.0, high=MAX_RATIO),
    Option("coupled", "bool", "Pair the i-th hidden and inner ratio (paper) instead of every combination.",
           SEARCHING, feeds=("SearchSpace.coupled",)),
    Option("round_to", "int", "Round candidate widths to a multiple of this (ratio 0 keeps the full width as it "
           "is).", SEARCHING, feeds=("SearchSpace.round_to",), low=1, high=MAX_ROUND_TO),
    Option("head_pruning", "choice", "How a narrower width shrinks attention: whole (paper: fewer heads of the "
           "full head width) or dims (every head kept, each narrowed, as Torch-Pruning does: 40 of 64 is 4 heads "
           "of 10).", SEARCHING, feeds=("SearchSpace.head_pruning",), choices=HEAD_PRUNING),
    Option("tau_start", "float", "Gumbel temperature at the start.", SEARCHING, feeds=("SearchConfig.tau_start",),
           low=MIN_TAU, high=MAX_TAU, why=TAU_WHY),
    Option("tau_schedule", "choice", "epoch: τ falls geometrically from tau_start to tau_min over the epochs; "
           "step: τ = max(tau_min, tau_start − tau_rate·step) (paper).", SEARCHING,
           feeds=("SearchConfig.tau_schedule",), choices=TAU_SCHEDULES),
    Option("tau_rate", "float", "Temperature decrease per step (tau_schedule step).", SEARCHING,
           feeds=("SearchConfig.tau_rate",), low=0.0, high=1.0),
    Option("tau_min", "float", "Lowest temperature.", SEARCHING, feeds=("SearchConfig.tau_min",), low=MIN_TAU,
           high=MAX_TAU, why=TAU_WHY),
    Option("from_scratch", "bool", "Retrain from fresh weights (official code) instead of transferring the "
           "supernet's (paper).", ("search", "retrain"), default=False),
    Option("from_init", "bool", "Retrain a warm-started search's decision from the trained model it started from "
           "(init: channels reordered as the search ordered them, then sliced; prune, then fine-tune) instead of "
           "from the supernet's weights.", ("search", "retrain"), default=False),
    Option("distill", "float", "Distil while retraining a warm-started search's decision: w of (1 − w)·CE + "
           "w·T²·KL(teacher ‖ model), the teacher the trained model the search started from (init); 0: none.",
           ("search", "retrain"), feeds=("TrainConfig.distill",), low=0.0, high=1.0),
    Option("distill_temperature", "float", "T of the distillation's softened distributions.", ("search", "retrain"),
           feeds=("TrainConfig.distill_temperature",), above=0.0, high=100.0),
    Option("init", "str", "Warm start from a trained RUN_DIR or MODEL_DIR (its shape and weights; the searched "
           "design is injected).", SEARCHING, default=None, nullable=True),
    Option("reorder", "choice", "Order channels by importance before the search: magnitude or taylor.", SEARCHING,
           default=None, choices=("magnitude", "taylor"), nullable=True),
) + _section(
    "Evaluation",
    Option("eval_seed", "int", "Seed of the sampled protocols' negatives (pop100, uni100).",
           ("train", "search", "retrain", "evaluate"), default=2024, low=0, high=MAX_SEED),
    Option("k", "int", "Cut-off of Recall, MRR and NDCG @k.", ("train", "search", "retrain", "evaluate"),
           feeds=("TrainConfig.k", "SearchConfig.k"), low=1, high=MAX_K),
    Option("eval_batch_size", "int", "Users scored at once when evaluating.",
           ("train", "search", "retrain", "evaluate"), feeds=("TrainConfig.eval_batch_size",), low=1,
           aliases=("eval_batch",)),
    Option("protocol", "choice", "full, pop100 or uni100.", EVAL, default="full", choices=("full", "pop100", "uni100"),
           recipe=False),
    Option("split", "choice", "valid or test.", EVAL, default="test", choices=("valid", "test"), recipe=False),
    Option("batch", "ints", "Batch sizes to time, comma-separated.", ("bench",), default=[1, 256], low=1,
           high=1_000_000, recipe=False),
    Option("repeats", "int", "Timed repeats (median reported) after 5 warm-ups.", ("bench",), default=30, low=1,
           high=100_000, recipe=False),
)
BY_KEY: Dict[str, Option] = {o.key: o for o in OPTIONS}
ALIASES: Dict[str, str] = {alias: o.key for o in OPTIONS for alias in o.aliases}


def options_for(command: str) -> List[Option]:
    """The options ``command`` takes as flags, in table order."""
    return [o for o in OPTIONS if command in o.commands]


def defaults(command: str) -> Dict[str, Any]:
    """Every recipe option at ``command``'s default, plus the command's own command-line options."""
    return {o.key: o.default_for(command) for o in OPTIONS if o.recipe or command in o.commands}


def canonical(key: Any) -> Any:
    """A recipe key under its own name: RecBole's names and older names map to ours."""
    return ALIASES.get(key, key) if isinstance(key, str) else key


def check_keys(keys: Iterable[Any], where: str) -> None:
    unknown = sorted(k if isinstance(k, str) and k.isidentifier() else repr(k)  # YAML keys may be numbers,
                     for k in set(map(canonical, keys)) - {o.key for o in OPTIONS if o.recipe})  # null, or empty
    if unknown:
        known = ", ".join(sorted(o.key for o in OPTIONS if o.recipe))
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {known}")


def build(cls: type, opts: Dict[str, Any], **fixed: Any) -> Any:
    """A ``cls`` configuration filled by keyword from the options that feed it (``fixed`` overrides)."""
    kwargs = {o.feeds_field(cls): opts[o.key] for o in OPTIONS if o.feeds_field(cls) and o.key in opts}
    kwargs.update(fixed)
    if cls is SearchSpace:
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**kwargs)


