"""Reading YAML that users hand to mlmm (bench specs, data mapping files) safely.

``yaml.safe_load`` builds no objects, but it still expands aliases: a ~500-byte spec whose
anchors reference each other grows ~10x per 61 bytes and hung ``mlmm bench`` for minutes.
mlmm's files never need anchors, so :class:`NoAliasLoader` refuses them (naming the file and
line), and :func:`read_text_file` refuses files over :data:`MAX_BYTES` and non-UTF-8 files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UnsafeFileError

#: Largest spec or mapping file read (a spec is a few KiB; this is far above any real one).
MAX_BYTES = 1 << 20


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses anchors (``&a``), aliases (``*a``) and so merge keys (``<<: *a``)."""

    source = "<yaml>"

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            line = event.start_mark.line + 1
            what = f"alias *{event.anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{event.anchor}"
            raise UnsafeFileError(f"{self.source}: line {line}: YAML {what} refused "
                                  "(mlmm's files take no anchors or aliases; write the values out)")
        return super().compose_node(parent, index)


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load(text)`` without anchors or aliases (``UnsafeFileError`` naming ``source``)
    and within :data:`MAX_BYTES`. YAML syntax errors raise ``yaml.YAMLError`` as usual."""
    if len(text) > MAX_BYTES:
        raise UnsafeFileError(f"{source}: {len(text)} characters is over the {MAX_BYTES}-byte limit for a YAML file")
    loader = NoAliasLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of the file ``what`` (e.g. "spec") at ``path``: a folder, a file over
    :data:`MAX_BYTES` or a binary file is a ``ValueError`` naming it; a missing or unreadable
    one an ``OSError`` naming it."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, not a {what} file")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise UnsafeFileError(f"{p}: {size} bytes is over the {MAX_BYTES}-byte limit for a {what} file")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not a text {what} file (byte {err.start} is not UTF-8)") from None
