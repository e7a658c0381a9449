"""llmtune's own evaluation metrics, shipped as real `evaluate` modules so they load offline.

`evaluate.load("accuracy")` fetches the metric script from the Hugging Face Hub, so it fails without a
network (and evaluate 0.4.6 ignores `HF_HUB_OFFLINE`: it only honours `HF_EVALUATE_OFFLINE`). The
metrics llmtune needs most are therefore shipped inside this package, one `evaluate` module per
folder (`llmtune/metrics/<name>/<name>.py`), and `load` hands evaluate the local file path, which
evaluate copies into its modules cache and imports without touching the network.

Each metric folder also has an `__init__.py` so setuptools packages the module files as ordinary
Python modules (no package-data globs needed); evaluate only copies the `<name>.py` file and never
imports the folder as a package, so the `__init__.py` does not get in its way.

The copied file is not self-contained: what the metrics of one library share lives in a private
module here (`_sklearn.py` for accuracy, f1, precision and recall; `_sacrebleu.py` for bleu and chrf;
rouge shares nothing), which the metric file imports as `from llmtune.metrics import _sklearn`. That works from evaluate's
cache because llmtune is importable wherever `load` runs (evaluate's import check only sees a library
import of `llmtune`), and the shared code is always the installed version, whatever copy evaluate
cached. A metric file binds the private module, never a class from it: evaluate 0.4.6 takes the
first `evaluate.EvaluationModule` subclass in the file's namespace as the metric, and an imported
base class would come before the metric's own class.

Nothing heavy is imported here: `evaluate` (which pulls in transformers and torch) is imported inside
`load` only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotation; importing evaluate costs seconds
    import evaluate

__all__ = ["SHIPPED", "load", "module_path"]

SHIPPED: tuple[str, ...] = ("accuracy", "f1", "precision", "recall", "bleu", "chrf", "rouge")
"""Names of the metrics shipped with llmtune; `load` finds these without a network."""

_PACKAGE_DIR = Path(__file__).resolve().parent

# The values huggingface_hub, datasets and evaluate all treat as "true" for their *_OFFLINE variables.
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE")


def module_path(name: str) -> Path:
    """Return the path of the `evaluate` module file of a metric shipped with llmtune.

    Args:
        name: one of `SHIPPED`.

    Returns:
        The absolute path of `llmtune/metrics/<name>/<name>.py`.

    Raises:
        KeyError: `name` is not a shipped metric.
    """
    if name not in SHIPPED:
        raise KeyError(f"{name!r} is not a metric shipped with llmtune; shipped: {', '.join(SHIPPED)}")
    return _PACKAGE_DIR / name / f"{name}.py"


def load(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load an evaluation metric: llmtune's shipped copy if there is one, else evaluate's Hub module.

    Args:
        name: a metric name. A name in `SHIPPED` loads llmtune's own module from inside this package
            (works offline, never touches the network). Any other name (a Hub metric such as
            `"meteor"`, a `"user/metric"` Hub id, or a path to a local evaluate module) is passed to
            `evaluate.load`; with `HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE` or `HF_EVALUATE_OFFLINE` set
            that only finds modules already in evaluate's cache and makes no network request.
        **kwargs: passed on to `evaluate.load` (e.g. `config_name`, `keep_in_memory`,
            `experiment_id`, `cache_dir`).

    Returns:
        The loaded `evaluate.EvaluationModule`; call `.compute(predictions=..., references=...)` on it.

    Raises:
        llmtune.errors.UserError: `name` is not shipped with llmtune and `evaluate.load` could not
            load it (unknown name, no network, missing dependency of the Hub module...).
    """
    import evaluate

    if name in SHIPPED:
        # A path to the .py file takes evaluate's local branch directly (no Hub lookup, no HEAD
        # request). Errors here are llmtune bugs, not user mistakes, so they propagate unchanged.
        return evaluate.load(str(module_path(name)), **kwargs)

    offline = _offline_requested()
    try:
        with _evaluate_offline(offline):
            return evaluate.load(name, **kwargs)
    except Exception as err:  # evaluate raises FileNotFoundError, ConnectionError, ImportError, ...
        from llmtune.errors import UserError

        why = "offline mode is on" if offline else "offline?"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        detail = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
        raise UserError(
            f"metric {name!r} is not shipped with llmtune and could not be loaded from the Hugging Face "
            f"Hub ({why}) or as a local evaluate module [{detail}]. "
            f"Metrics shipped with llmtune, which work offline: {', '.join(SHIPPED)}."
        ) from err


def _offline_requested() -> bool:
    """Whether any of the Hugging Face offline switches is set in the environment right now."""
    return any(os.environ.get(var, "").strip().upper() in _TRUE_VALUES for var in _OFFLINE_VARIABLES)


@contextlib.contextmanager
def _evaluate_offline(offline: bool) -> Iterator[None]:
    """Make evaluate honour the offline switches for the duration of one `evaluate.load` call.

    evaluate 0.4.6 reads only `HF_EVALUATE_OFFLINE`, and only once when it is imported, into
    `evaluate.config.HF_EVALUATE_OFFLINE`; with just `HF_HUB_OFFLINE=1` it still sends HEAD requests
    to the Hub (100 s timeout each) before falling back to its cache. Its network helpers read the
    config attribute at call time, so setting it here (and restoring it after) keeps the fallback
    from touching the network while still letting it find previously cached Hub modules.
    """
    if not offline:
        yield
        return
    from evaluate import config as evaluate_config

    previous = evaluate_config.HF_EVALUATE_OFFLINE
    evaluate_config.HF_EVALUATE_OFFLINE = True
    try:
        yield
    finally:
        evaluate_config.HF_EVALUATE_OFFLINE = previous
