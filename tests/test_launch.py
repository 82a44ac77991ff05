"""A distributed worker ends without the interpreter's teardown (gloo's threads can abort it after the
run is done): what it printed and logged is flushed, its exit code kept, and the CLI's exit codes
(success, usage errors) are the same under a launcher as without one."""
import os
import subprocess
import sys
from pathlib import Path

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
