"""A distributed worker ends without the interpreter's teardown (gloo's threads can abort it after the
run is done): what it printed and logged is flushed, its exit code kept, and the CLI's exit codes
(success, usage errors) are the same under a launcher as without one. The launcher's variables are checked
before use: bad or missing ones are a one-line error, not a traceback."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compress.errors import ConfigError
from compress.runtime.launch import Launch, environment, launched

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """
import atexit, logging, sys
from compress.runtime.launch import exit_without_teardown
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
logging.info("logged before the exit")
atexit.register(lambda: open(sys.argv[2], "w").close())  # teardown: must not run
sys.stdout.write("printed without a newline")
exit_without_teardown(3)
"""


def test_exit_flushes_and_keeps_the_code_but_skips_teardown(tmp_path):
    log, marker = tmp_path / "log.txt", tmp_path / "teardown-ran"
    proc = subprocess.run([sys.executable, "-c", PROGRAM, str(log), str(marker)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "printed without a newline"
    assert "logged before the exit" in log.read_text()
    assert not marker.exists()


def cli(*args: str, world_size: str):
    env = {**os.environ, "WORLD_SIZE": world_size}
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def test_the_cli_keeps_its_exit_codes_under_a_launcher():
    for world_size in ("1", "2"):  # --version and a usage error exit before any process group is joined
        version = cli("--version", world_size=world_size)
        assert version.returncode == 0 and version.stdout.strip(), version.stderr
        unknown = cli("no-such-command", world_size=world_size)
        assert unknown.returncode == 2 and "no-such-command" in unknown.stderr


DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "COMPRESS_RENDEZVOUS_SECONDS")
MEET = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def cli_under(variables: dict, *args: str):
    """The CLI with exactly ``variables`` among the launcher's (none inherited from this shell)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**env, **variables}, timeout=120)


@pytest.mark.parametrize("variables, named", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but RANK is not set"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "2", **MEET}, "RANK=2 but WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1", **MEET}, "LOCAL_RANK='-1' is not a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_PORT": "29500"}, "MASTER_ADDR is not set"),
], ids=["no-rank", "world-not-a-number", "rank-too-large", "negative-local-rank", "no-master"])
def test_bad_launcher_variables_are_a_one_line_error(tmp_path, tiny_data_file, variables, named):
    """The audit: `WORLD_SIZE=2 compress train` ended in torch's ValueError traceback ("environment variable
    RANK expected") and `WORLD_SIZE=abc` in int()'s, from the console script before any error handling."""
    out = tmp_path / "run"
    proc = cli_under(variables, "train", "--data", str(tiny_data_file), "--epochs", "1", "--device", "cpu",
                     "--out", str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and named in last and "torchrun" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_the_launcher_environment_is_read_as_torchrun_writes_it(monkeypatch):
    for name in DIST_VARS:
        monkeypatch.delenv(name, raising=False)
    assert environment() is None and not launched()
    monkeypatch.setenv("WORLD_SIZE", "abc")
    assert not launched()  # the console script asks first: never raises
    with pytest.raises(ConfigError, match="WORLD_SIZE='abc'"):
        environment()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert environment() is None and not launched()
    for name, value in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", **MEET}.items():
        monkeypatch.setenv(name, value)
    assert launched() and environment() == Launch(4, 3, 1, "127.0.0.1", 29500)
    monkeypatch.delenv("LOCAL_RANK")
    assert environment().local_rank == 0
    monkeypatch.setenv("MASTER_PORT", "70000")
    with pytest.raises(ConfigError, match="MASTER_PORT=70000 is not a TCP port"):
        environment()
