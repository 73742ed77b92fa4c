"""The files a config or a command line makes a run read beyond itself (a section given as a file, a
``--config`` among the arguments), and one digest of their contents: what a reused run or a continued study is
checked against."""

from __future__ import annotations

import hashlib
from pathlib import Path


def named_files(text: str, folder: Path) -> list[Path]:
    """The existing file a string (a value, or an option's ``--key=value``) names, relative to ``folder``."""
    value = text.split("=", 1)[1] if text.startswith("--") and "=" in text else text
    if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 4096:
        return []
    try:
        path = Path(value.strip()).expanduser()
        path = path if path.is_absolute() else folder / path
        return [path] if path.is_file() else []
    except (OSError, ValueError):
        return []


def included_files(config: Path, seen: set[Path] | None = None) -> list[Path]:
    """The files a config names as its values (``model: model.yaml``), and theirs, as jsonargparse reads
    them."""
    import yaml

    seen = seen if seen is not None else {config.resolve()}
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    found: list[Path] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            for path in named_files(item, config.parent):
                if path.resolve() not in seen:
                    seen.add(path.resolve())
                    found += [path, *included_files(path, seen)]
    return found


def files_digest(paths: list[Path]) -> str | None:
    """One digest of the files' bytes, in order; None for no files."""
    if not paths:
        return None
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
