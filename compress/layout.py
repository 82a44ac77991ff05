"""The names of the files and folders compress writes, in one place.

MODEL_DIR (a dense model; ``compress export``, or a train RUN_DIR):
    config.json        the model (backbone, ArchSpec, N, item count, style) and what wrote it
    model.safetensors  the weights, strictly loaded
    items.json         raw item id of every embedding row, item popularity (MODEL_DIR)
    card.json          decision, metrics, FLOPs, params, latency, command, versions (MODEL_DIR)
    README.md          the card for people, rendered from card.json (MODEL_DIR)
    native/            the model as the wrapped class, with items.json and README.md (MODEL_DIR, optional)
    metrics.json       best epoch, metrics, history (RUN_DIR)      train.log  one line per epoch
    metrics.csv        one row per epoch: losses, τ, p and q, validation metrics (every RUN_DIR)

search RUN_DIR:
    config.json, arch.json (the decided ArchSpec), search_card.json, supernet/ (a MODEL_DIR-like
    checkpoint with α and β), retrained/ (the retrained MODEL_DIR)

RUN_DIR.partial/ (a run in progress): run.json (kind and options), checkpoint/ (tensors + state),
lock (the writing process), metrics.csv (the epochs so far)

Every published directory also holds ``.compress``, the marker that lets ``overwrite`` replace it: a JSON
object that lists the directory's top-level entries, so that ``overwrite`` refuses a directory holding
anything else (a file the user added). What compress writes into a published directory later is listed
in WRITTEN_LATER.
"""
MARKER = ".compress"  # in every directory compress publishes: `overwrite` replaces only those
LOCK = "lock"  # in RUN_DIR.partial/: the one process writing the run
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ITEMS = "items.json"
CARD = "card.json"
MODEL_README = "README.md"
METRICS = "metrics.json"
METRICS_CSV = "metrics.csv"
TRAIN_LOG = "train.log"
ARCH = "arch.json"
SEARCH_CARD = "search_card.json"
SUPERNET = "supernet"
RETRAINED = "retrained"
NATIVE = "native"
RUN_META = "run.json"
CHECKPOINT = "checkpoint"
PARTIAL = ".partial"
ALPHA_BETA_PNG = "search_alpha_beta.png"  # `inspect --plot` of a search RUN_DIR: p and q over the epochs
CANDIDATES_PNG = "search_candidates.png"  # and the cost of every candidate
# what compress writes into a directory it published, after publishing it, keyed by a file that marks the
# kind of directory: a search RUN_DIR gets retrained/ (retrained.partial/ while retraining) and the plots
WRITTEN_LATER = {SEARCH_CARD: (RETRAINED, RETRAINED + PARTIAL, ALPHA_BETA_PNG, CANDIDATES_PNG)}
