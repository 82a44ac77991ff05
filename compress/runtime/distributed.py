"""Data parallelism over ``torch.distributed``, launched by ``torchrun``.

Every process reads the whole dataset and draws the same global batch (same seeds); each takes its
contiguous share of the rows, and the gradients are summed across processes before every optimiser
step, with each share's loss weighted by its fraction of the batch's targets. The sum is therefore
the gradient of the global batch's mean loss, and every process applies the same update: weights
and α/β stay identical on every rank without a broadcast. We reduce the gradients ourselves instead
of wrapping the model in ``DistributedDataParallel`` because the scoring head and the α/β step run
outside the model's ``forward`` (DDP only prepares its reducer inside ``forward``).

With one process (no ``torchrun``) every function here is a no-op, and no collective is called.
Only rank 0 writes artifacts, checkpoints and progress; evaluation is sharded by batch and the
ranks are gathered, so its metrics equal a single process's exactly.
"""
from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from typing import Any, Iterable, List, Optional, Tuple

import torch
import torch.distributed as dist

from compress.errors import ConfigError
from compress.runtime.launch import ALONE, Launch, environment

log = logging.getLogger(__name__)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)  # a rank may wait this long for rank 0 writing a checkpoint
RENDEZVOUS_SECONDS = 300.0  # default wait for the other processes to meet; COMPRESS_RENDEZVOUS_SECONDS overrides
NOTICE_SECONDS = 5.0  # a wait longer than this says what it waits for


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> None:
    """Join the process group that ``torchrun`` describes: gloo for CPU tensors and, on GPU machines,
    NCCL for CUDA tensors on this rank's GPU (LOCAL_RANK), so ``--device cpu`` and ``cuda`` both work.
    A no-op without ``torchrun`` or when already joined.

    The launcher's variables are checked first (``launch.environment``: a ConfigError, not torch's
    traceback). The processes meet (env:// rendezvous) within COMPRESS_RENDEZVOUS_SECONDS (default
    300): variables left over in a shell without torchrun would otherwise wait for peers that never
    come for the 30 minutes collectives may take. The wait runs in a helper thread so that Ctrl-C and
    SIGTERM stop it (torch's wait holds the main thread in C++, where Python's handlers never run)."""
    launch = environment()
    if launch is None or world_size() > 1:
        return
    backend = "gloo"
    if torch.cuda.is_available():
        if launch.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {launch.local_rank} but only {torch.cuda.device_count()} CUDA devices; "
                              f"set --nproc_per_node to at most the GPU count")
        torch.cuda.set_device(launch.local_rank)  # "cuda" and "auto" now mean this rank's GPU
        backend = "cpu:gloo,cuda:nccl"
    store, rank_, world = meet(launch, rendezvous_seconds())
    store.set_timeout(COLLECTIVE_TIMEOUT)  # as init_process_group does with the store it makes itself
    dist.init_process_group(backend, store=dist.PrefixStore("default_pg", store), rank=rank_, world_size=world,
                            timeout=COLLECTIVE_TIMEOUT)


def rendezvous_seconds() -> float:
    """How long the processes may take to meet: COMPRESS_RENDEZVOUS_SECONDS, or RENDEZVOUS_SECONDS."""
    text = os.environ.get("COMPRESS_RENDEZVOUS_SECONDS", "").strip()
    if not text:
        return RENDEZVOUS_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"COMPRESS_RENDEZVOUS_SECONDS={text!r} is not a positive number of seconds; set it to "
                          f"one (e.g. 300) or unset it")
    return seconds


def meet(launch: Launch, seconds: float) -> Tuple[Any, int, int]:
    """(store, rank, world size) of torch's env:// rendezvous, waited for at most ``seconds``, in a daemon
    thread joined in short steps so that signals reach the main thread. A timeout or a failure is a
    ConfigError naming the variables that asked for a distributed run."""
    box: dict = {}

    def run() -> None:
        try:
            box["met"] = next(dist.rendezvous("env://", timeout=datetime.timedelta(seconds=seconds)))
        except BaseException as exc:  # handed to the main thread below
            box["error"] = exc

    helper = threading.Thread(target=run, name="compress-rendezvous", daemon=True)
    started = time.monotonic()
    helper.start()
    noticed = False
    while helper.is_alive():
        helper.join(0.2)
        if not noticed and helper.is_alive() and time.monotonic() - started > NOTICE_SECONDS:
            noticed = True
            log.warning("waiting up to %g s for the other %d processes of a distributed run at %s:%d (WORLD_SIZE=%d, "
                        "RANK=%d); Ctrl-C stops", seconds, launch.world - 1, launch.master_addr,
                        launch.master_port, launch.world, launch.rank)
    if "met" in box:
        return box["met"]
    raise ConfigError(f"the processes of a distributed run (WORLD_SIZE={launch.world}, RANK={launch.rank}) did not "
                      f"meet at {launch.master_addr}:{launch.master_port} within {seconds:g} s "
                      f"({_first_line(box.get('error'))}); {ALONE}")


def _first_line(exc: Optional[BaseException]) -> str:
    """torch's reason, on one line (its messages can carry a C++ stack)."""
    text = str(exc or "no reason given").strip().splitlines()
    return text[0] if text else type(exc).__name__


def shard(n: int) -> slice:
    """This rank's contiguous rows of a global batch of ``n`` (``torch.tensor_split``'s partition)."""
    return shard_of(n, rank())


def shard_of(n: int, r: int, world: Optional[int] = None) -> slice:
    """Rank ``r``'s rows of ``n`` among ``world`` ranks (default: this run's)."""
    w = world or world_size()
    size, extra = divmod(n, w)
    lo = r * size + min(r, extra)
    return slice(lo, lo + size + (r < extra))


def share(local: torch.Tensor, total: int) -> float:
    """Weight of a shard's mean loss so that summed gradients are those of the global mean:
    ``local`` real targets out of ``total`` in the global batch."""
    return float(local) / total if world_size() > 1 else 1.0


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce (sum) the gradients of ``params`` in one flat buffer. A rank without a gradient for
    a parameter (an empty shard) contributes zeros; a parameter no rank has a gradient for keeps
    ``None``, so the optimiser skips it exactly as a single process would."""
    if world_size() == 1:
        return
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([float(p.grad is not None) for p in params], dtype=grads[0].dtype,
                           device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [present])
    dist.all_reduce(flat)  # on the training device: gloo for CPU tensors, NCCL for CUDA ones
    offset = 0
    for p, seen in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if seen else None
        offset += n


def sum_floats(*values: float) -> Tuple[float, ...]:
    """Each value summed over the ranks, in one collective: loss sums for the log, and stop flags
    (a wall-clock budget or a Ctrl-C seen by any rank stops every rank at the same step)."""
    if world_size() == 1:
        return tuple(float(v) for v in values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)  # CPU: gloo
    dist.all_reduce(t)
    return tuple(t.tolist())


def gather_objects(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order (e.g. RNG states for a checkpoint); ``[obj]`` alone."""
    if world_size() == 1:
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(local: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """Concatenate every rank's 1-D ``local`` (rank r holds ``sizes[r]`` entries) in rank order."""
    if world_size() == 1:
        return local
    width = max(sizes)
    padded = torch.zeros(width, dtype=local.dtype)  # CPU: gloo
    padded[:len(local)] = local.cpu()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if world_size() > 1:
        dist.destroy_process_group()
