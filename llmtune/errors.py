"""The errors llmtune shows to its users.

Library code raises these; only `llmtune.cli.main` turns them into exit codes, so tests and other
programs can call the task modules directly and catch the exceptions.
"""

from __future__ import annotations

import os
import re
from typing import Any

EXIT_FAILURE = 1  # something broke while running
EXIT_USAGE = 2  # the user's config, arguments or input data are wrong
EXIT_GATE = 3  # `llmtune evaluate --fail-under/--fail-over`: a metric missed its gate


class LlmtuneError(Exception):
    """Base class of every error llmtune reports without a traceback."""

    exit_code = EXIT_FAILURE


class UserError(LlmtuneError):
    """A mistake the user can fix: bad config, missing file or column, bad argument, bad input line."""

    exit_code = EXIT_USAGE


class ConfigError(UserError):
    """One or more problems in a config file, reported together.

    Args:
        problems: one line per problem, each naming the key path (and line when known) and the fix.
        source: the config file the problems are in, if any.
    """

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"{len(self.problems)} config {noun}{where}:"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class DataError(UserError):
    """Input data the user pointed at is missing, malformed or does not fit the config."""


class GateFailure(LlmtuneError):
    """A metric missed a `--fail-under`/`--fail-over` gate; the metrics were already printed."""

    exit_code = EXIT_GATE


# Environment variables holding a Hugging Face token: their values are never echoed.
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_LOOKS_LIKE_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{16,}")


def redact(text: str) -> str:
    """`text` with anything that looks like an access token replaced, for error messages.

    Messages echo the offending value (`got 'many'`); a Hugging Face token pasted into the wrong key,
    or the value of HF_TOKEN, must never be printed.
    """
    text = _LOOKS_LIKE_HF_TOKEN.sub("<hidden token>", text)
    for name in TOKEN_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 8:  # a one-letter "token" would blank out ordinary words
            text = text.replace(secret, "<hidden token>")
    return text


def shown(value: Any) -> str:
    """`repr(value)` for an error message, with tokens hidden (see `redact`)."""
    return redact(repr(value))
