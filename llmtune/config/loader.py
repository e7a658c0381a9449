"""Reading YAML configs: files, `key.path=value` overrides, line numbers and relative paths.

This is the only module that knows YAML (together with `dump_yaml` for the resolved config).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from llmtune.errors import ConfigError, UserError, redact
from llmtune.files import write_text_atomically

Key = tuple[str, ...]

class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: `3e-5` is a float and `no`/`yes`/`on`/`off` stay strings.

    Plain YAML 1.1 reads `3e-5` as a string and `save_strategy: no` as False: both classic traps.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_scalar(text: str) -> Any:
    """Parse one override value the way YAML would read it (`3e-5` -> float, `null` -> None, `[a, b]` -> list)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def _line_map(node: yaml.Node, prefix: Key = (), duplicates: list[str] | None = None) -> dict[Key, int]:
    """Map every key path in a composed YAML document to its 1-based line number.

    A key given twice in one mapping is appended to `duplicates` (PyYAML would silently keep the last).
    """
    lines: dict[Key, int] = {}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = prefix + (str(key_node.value),)
            line = key_node.start_mark.line + 1
            if key[-1] in seen and duplicates is not None:
                duplicates.append(
                    f"{'.'.join(key)}: given twice, on line {seen[key[-1]]} and line {line}; YAML would silently keep "
                    "the second. Delete one of them."
                )
            seen[key[-1]] = line
            lines[key] = line
            lines.update(_line_map(value_node, key, duplicates))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:  # mappings inside lists (e.g. a list of dicts) get the same duplicate check
            _line_map(item, prefix, duplicates)
    return lines


class RawConfig:
    """A config as plain data, before schema validation.

    Attributes:
        data: the nested dict read from the file, with overrides applied.
        source: the config file path (None for a config built without a file).
        lines: line number of each key path in the file, for error messages.
        overridden: key paths set on the command line (they have no line number).
    """

    def __init__(self, data: dict[str, Any], source: Path | None = None, lines: dict[Key, int] | None = None):
        self.data = data
        self.source = source
        self.lines = lines or {}
        self.overridden: set[Key] = set()

    def where(self, key: Key) -> str:
        """Describe a key for an error message: `data.text_column (line 12)` or `(command line)`."""
        dotted = ".".join(str(k) for k in key) or "<top level>"
        if key in self.overridden:
            return f"{dotted} (command-line override)"
        for depth in range(len(key), 0, -1):
            line = self.lines.get(tuple(str(k) for k in key[:depth]))
            if line is not None:
                return f"{dotted} (line {line})"
        return dotted


def read_yaml(path: str | Path) -> RawConfig:
    """Read a YAML config file into a RawConfig.

    Args:
        path: the config file.

    Returns:
        The file's mapping, with line numbers for error messages.

    Raises:
        UserError: the file is missing, unreadable, not UTF-8, not valid YAML, or not a mapping at the top.
        ConfigError: a key appears twice in one mapping (every such key, with both lines).
    """
    path = Path(path)
    if not path.is_file():
        hint = " (it is a directory)" if path.is_dir() else ""
        raise UserError(f"config file not found: {path}{hint}. Pass the path of a YAML config, e.g. configs/classification/sst2-quickstart.yaml.")
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw_bytes.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw_bytes.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UserError(
            f"{path}:{line}:{column}: not valid UTF-8 (byte 0x{raw_bytes[exc.start]:02x} at offset {exc.start}). "
            "Save the config as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or fix that character."
        ) from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML: {exc.problem}. Fix the syntax at that line (indentation, a missing ':' or quote).") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level of a config must be a mapping of keys (seed:, model:, data:, ...), not a {type(data).__name__}.")
    duplicates: list[str] = []
    lines = _line_map(node, duplicates=duplicates) if node is not None else {}
    if duplicates:
        raise ConfigError(duplicates, source=str(path))
    return RawConfig(data, source=path, lines=lines)


def apply_overrides(raw: RawConfig, overrides: list[str]) -> None:
    """Apply `key.path=value` and `~key.path` overrides in place, in the order given.

    `key.path=value` sets a key (the value parsed as a YAML scalar), creating missing sections.
    `~key.path` (torchtune's syntax) deletes a key and everything under it, so a later override or the
    schema default takes its place: `~model.from_config model.name_or_path=runs/mlm` turns a
    from-scratch config into one that starts from a trained model.

    Raises:
        ConfigError: an override is not of the form `key.path=value` or `~key.path`, walks into a
            non-mapping, or removes a key that is not there (every such override, listed together).
    """
    problems = []
    for item in overrides:
        if item.startswith("~"):
            problem = _remove_key(raw, item)
            if problem:
                problems.append(problem)
            continue
        key_text, sep, value_text = item.partition("=")
        key = tuple(part.strip() for part in key_text.split("."))
        if not sep or not all(key):
            problems.append(
                f"override '{redact(item)}': expected key.path=value (e.g. training.learning_rate=3e-5) "
                "or ~key.path to remove a key"
            )
            continue
        node = raw.data
        for depth, part in enumerate(key[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"override '{key_text}=...': {'.'.join(key[: depth + 1])} is a {type(child).__name__}, not a section")
                break
            node = child
        else:
            node[key[-1]] = parse_scalar(value_text)
            raw.overridden.add(key)
    if problems:
        raise ConfigError(problems, source=str(raw.source) if raw.source else None)


def _remove_key(raw: RawConfig, item: str) -> str | None:
    """Apply one `~key.path` override: delete that key (and what is under it) from `raw`.

    Returns:
        None when the key was removed, else the problem, naming the override and the fix.
    """
    from llmtune.config.validate import suggest

    key_text = item[1:]
    if "=" in key_text:
        # `~a.b=1` is ambiguous (remove, or set?): torchtune refuses it too.
        name = key_text.partition("=")[0].strip()
        return f"override '{redact(item)}': ~ removes a key and takes no value; write ~{name} to remove it, or {name}=VALUE to set it"
    key = tuple(part.strip() for part in key_text.split("."))
    if not all(key):
        return f"override '{item}': expected ~key.path (e.g. ~model.from_config) to remove a key"
    node: Any = raw.data
    for depth, part in enumerate(key):
        if not isinstance(node, dict) or part not in node:
            parent = ".".join(key[:depth])
            if isinstance(node, dict):
                where = f"{parent} has no key '{part}'" if parent else f"the config has no top-level key '{part}'"
                hint = suggest(part, node) or (f" Keys there: {', '.join(map(str, node))}." if node else f" {parent or 'The config'} is empty.")
            else:
                where, hint = f"{parent} is a value ({type(node).__name__}), not a section", ""
            return f"override '{item}': nothing to remove, {where}.{hint}"
        if depth < len(key) - 1:
            node = node[part]
    del node[key[-1]]
    # The removed keys' file lines and earlier overrides no longer describe anything in the config.
    raw.lines = {k: line for k, line in raw.lines.items() if k[: len(key)] != key}
    raw.overridden = {k for k in raw.overridden if k[: len(key)] != key}
    return None


def dump_yaml(data: dict[str, Any], path: Path) -> None:
    """Write a resolved config as YAML (keys in schema order, not sorted), atomically."""
    write_text_atomically(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
