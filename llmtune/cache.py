"""llmtune's own on-disk cache: trained tokenizers, so a second run on the same data and settings skips training one.

`datasets` already caches the loaded data and every `map` (tokenization) on disk; what it cannot cache is
the tokenizer that `tokenizer.train` builds from the training text. Training one is deterministic (same text
and settings, byte-identical files), so its result is stored under a key that covers everything it depends
on and reused by later runs: a learning-rate search, a re-run after a crash, the quickstart run twice.

The cache lives in `$LLMTUNE_CACHE_DIR`, else `$XDG_CACHE_HOME/llmtune`, else `~/.cache/llmtune`; deleting
it is always safe. It is an optimisation only: an entry that cannot be read or written is logged and
the tokenizer is trained as if there were no cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmtune.config.schema import RunConfig

logger = logging.getLogger(__name__)

# The packages whose code decides which texts a tokenizer is trained on (datasets: loading, splitting)
# and what training them gives (tokenizers).
KEY_PACKAGES = ("tokenizers", "datasets")


def cache_dir() -> Path:
    """The folder of llmtune's cache (not created here)."""
    configured = os.environ.get("LLMTUNE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmtune"


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """The sha256 of llmtune's own source files.

    In the key because llmtune's code picks the texts a tokenizer is trained on (splits, columns,
    filtering); a change there, released or not, must not reuse a tokenizer trained on other texts.
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def tokenizer_key(cfg: RunConfig) -> str | None:
    """The cache key of the tokenizer `cfg` trains (`tokenizer.train`), or None when it must not be cached.

    The key covers every input of the training: the config class and task (which columns and rows a
    task trains on), the seed (a carved-out validation split), the whole `data:` section, the
    `tokenizer.train` settings, the sha256 of each data file, and the versions of llmtune's source and of
    the packages in KEY_PACKAGES. It leaves out `model:` and `training:`, which do not change the text,
    so a search over model sizes or learning rates reuses one tokenizer.

    Returns:
        A hex sha256; None without `tokenizer.train`, or for Hub data without a pinned `revision` (the
        Hub's branch can move between runs).
    """
    from importlib.metadata import PackageNotFoundError, version

    from llmtune.manifest import data_sources

    if cfg.tokenizer.train is None:
        return None
    sources = data_sources(cfg.data)
    if any("hub" in source and source.get("revision") is None for source in sources):
        return None
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    payload = {
        "kind": "tokenizer",
        "config": type(cfg).__name__,
        "task": getattr(cfg, "task", None),
        "seed": cfg.seed,
        "data": cfg.data.model_dump(mode="json"),
        "tokenizer": cfg.tokenizer.train.model_dump(mode="json"),
        # Paths are in `data`; the content is what counts.
        "sources": [{k: v for k, v in source.items() if k in ("key", "sha256", "hub", "name", "revision")} for source in sources],
        "llmtune": source_digest(),
        "packages": versions,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _tokenizer_path(key: str) -> Path:
    return cache_dir() / "tokenizers" / f"{key}.json"


def load_tokenizer_backend(key: str) -> Any | None:
    """The `tokenizers.Tokenizer` stored under `key`, or None when there is none (or it cannot be read)."""
    from tokenizers import Tokenizer

    path = _tokenizer_path(key)
    if not path.is_file():
        return None
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged entry is a cache miss, whatever the parser raised
        logger.warning("ignoring the cached tokenizer %s (%s); training it again", path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return None
    logger.info("tokenizer.train: reusing the tokenizer trained on the same data and settings (%s)", path)
    return backend


def store_tokenizer_backend(key: str, backend: Any) -> None:
    """Store a trained `tokenizers.Tokenizer` under `key`, atomically; a failure is logged, never raised."""
    from llmtune.files import write_text_atomically

    path = _tokenizer_path(key)
    try:
        write_text_atomically(path, backend.to_str())
    except OSError as exc:
        logger.warning("could not cache the trained tokenizer in %s (%s); the next run trains it again", path, exc.strerror or exc)
