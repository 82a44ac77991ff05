"""Generated blocks in Markdown files, so the suite's numbers quoted in a README come from the
results file and cannot drift from it. A block is the text between a preset's two markers:

    <!-- suite:cpu -->
    (replaced by `python benchmarks/suite.py report --preset cpu --readme README.md`)
    <!-- /suite:cpu -->

Everything outside the markers is left as it is; the file is rewritten atomically. Other generated
excerpts use the same helpers under their own ``kind`` (``<!-- excerpt:progress -->``).
"""
from __future__ import annotations

from typing import Tuple

from compress.errors import ConfigError
from compress.files import write_text


def markers(preset: str, kind: str = "suite") -> Tuple[str, str]:
    return f"<!-- {kind}:{preset} -->", f"<!-- /{kind}:{preset} -->"


def replace_block(path: str, preset: str, body: str, kind: str = "suite") -> bool:
    """Put ``body`` between the preset's markers in ``path``; False when the file has none."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path} to update its {kind} block: {exc.strerror}") from None
    begin, end = markers(preset, kind)
    i, j = text.find(begin), text.find(end)
    if i < 0 and j < 0:
        return False
    if i < 0 or j < i or text.count(begin) > 1 or text.count(end) > 1:
        raise ConfigError(f"{path}: the markers {begin} and {end} must each appear once, in that order")
    write_text(path, f"{text[:i + len(begin)]}\n{body.strip()}\n{text[j:]}")
    return True


def fill_block(path: str, preset: str, body: str, kind: str = "suite", what: str = "the summary") -> None:
    """``replace_block``, refused when ``path`` has no markers for the preset (a script's explicit target)."""
    if not replace_block(path, preset, body, kind):
        raise ConfigError(f"{path} has no {' … '.join(markers(preset, kind))} block to write {what} into")
