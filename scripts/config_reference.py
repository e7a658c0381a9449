"""Print the config reference (Markdown) generated from llmtune's schema: `python scripts/config_reference.py > docs/config.md`."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import BaseModel  # noqa: E402

from llmtune.config.schema import SCHEMAS, flag_option  # noqa: E402
from llmtune.config.validate import _section_class  # noqa: E402


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    return (text if not isinstance(annotation, type) else annotation.__name__).replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if flag_option(field):
            continue  # filled from a command-line option, not a config key
        key = f"{prefix}{name}"
        section = _section_class(field.annotation)
        default = "required" if field.is_required() else ("{}" if field.default_factory else repr(field.default))
        if section is not None:
            rows.append(f"| `{key}` | section | {default} | {field.description or section.__doc__.strip()} |")
            # A mapping of sections (search.space: config key -> ParamSpec) is documented under a <key> placeholder.
            rows += _rows(section, key + (".<key>." if typing.get_origin(field.annotation) is dict else "."))
        else:
            rows.append(f"| `{key}` | `{_type_name(field.annotation)}` | `{default}` | {field.description or ''} |")
    return rows


def render() -> str:
    """The whole reference, one table per command."""
    parts = ["# Config reference", "", "Generated from `llmtune/config/schema.py` by `python scripts/config_reference.py`; do not edit by hand.", ""]
    for command, schema in SCHEMAS.items():
        parts += [f"## `llmtune {command}`", "", (schema.__doc__ or "").strip(), "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        parts += _rows(schema) + [""]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
