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

Every published directory also holds ``.compress``, the marker that lets ``overwrite`` replace it.
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
