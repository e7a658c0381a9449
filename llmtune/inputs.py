"""Reading inference inputs (.txt, .jsonl, .csv, .tsv or stdin) as records with line numbers.

Unlike `llmtune.data` (training data through `datasets`), this reads line by line so that every
problem names the line it is on: `reviews.jsonl: line 7: invalid JSON (...)`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from llmtune.config.validate import suggest
from llmtune.errors import DataError

# File extension -> format; `--input-format`-style names are the same without the dot.
FORMATS = {".txt": ".txt", ".jsonl": ".jsonl", ".ndjson": ".jsonl", ".csv": ".csv", ".tsv": ".tsv"}


class Record(NamedTuple):
    """One input row: its 1-based line number in the input and its fields."""

    line: int
    fields: dict[str, Any]


def _sniff_stdin(lines: list[str]) -> str:
    """stdin has no file name: JSON Lines if the first non-blank line is a JSON object, else plain text."""
    first = next((line for line in lines if line.strip()), "")
    return ".jsonl" if first.lstrip().startswith("{") else ".txt"


def _text_records(lines: Iterable[str], field: str) -> Iterator[Record]:
    # Every line is a record, blank ones included, so the output lines up with the input (`paste`).
    for number, line in enumerate(lines, start=1):
        yield Record(number, {field: line.rstrip("\r\n")})


def _jsonl_records(lines: Iterable[str], name: str) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}, line {number}: invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one JSON object.") from None
        if not isinstance(row, dict):
            raise DataError(f"{name}, line {number}: expected a JSON object like {{\"text\": \"...\"}}, got a {type(row).__name__}.")
        yield Record(number, row)


def _csv_records(lines: Iterable[str], name: str, delimiter: str) -> Iterator[Record]:
    # TSV is read unquoted, as llmtune.data reads training TSVs: a stray '"' must not swallow lines.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(lines, delimiter=delimiter, quoting=quoting)
    try:
        for row in reader:
            if None in row:
                raise DataError(f"{name}, line {reader.line_num}: more cells than header columns ({', '.join(reader.fieldnames)}).")
            yield Record(reader.line_num, {k: ("" if v is None else v) for k, v in row.items()})
    except csv.Error as exc:
        raise DataError(f"{name}, line {reader.line_num}: cannot parse as {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}.") from None


def _check_fields(records: Iterable[Record], name: str, required: list[str], field_option: str) -> Iterator[Record]:
    for record in records:
        for field in required:
            if field not in record.fields:
                found = ", ".join(record.fields) or "none"
                hint = suggest(field, record.fields) or f" Name the field with {field_option} (fields here: {found})."
                raise DataError(f"{name}, line {record.line}: no field '{field}'.{hint}")
            value = record.fields[field]
            if not isinstance(value, str):
                raise DataError(f"{name}, line {record.line}: field '{field}' must be a string, got {json.dumps(value)[:60]}.")
        yield record


def read_records(
    path_or_dash: str | Path,
    field: str = "text",
    pair_field: str | None = None,
    fmt: str | None = None,
    field_option: str = "--text-field/--text-pair-field",
) -> list[Record]:
    """Read every record of an input, checking that each one has the text field(s).

    Args:
        path_or_dash: a .txt (one text per line), .jsonl (one object per line), .csv or .tsv file (header
            row with column names), or `-` for stdin (JSON Lines if it starts with `{`, else text lines).
        field: the field/column holding the text; for .txt input the name each line's text is stored under.
        pair_field: the second text of a sentence pair (not available for .txt input).
        fmt: txt, jsonl, csv or tsv, overriding the file extension (and stdin's guess).
        field_option: how the user names the field, for the hint when it is missing.

    Returns:
        The records in input order, each with its line number.

    Raises:
        DataError: missing or empty input, unknown file type, invalid JSON/CSV or a missing field, naming the line.
    """
    given = FORMATS.get(f".{fmt}") if fmt else None
    if fmt and given is None:
        raise DataError(f"--input-format: expected one of {', '.join(f[1:] for f in FORMATS)}, got {fmt!r}.")
    if str(path_or_dash) == "-":
        name, lines = "stdin", sys.stdin.read().splitlines(keepends=True)
        suffix = given or _sniff_stdin(lines)
    else:
        path = Path(path_or_dash)
        name, suffix = str(path), given or FORMATS.get(path.suffix.lower())
        if suffix is None:
            raise DataError(f"--input: unsupported file type '{path.suffix}' ({path}); use one of {', '.join(FORMATS)} or - for stdin.")
        if not path.is_file():
            raise DataError(f"--input: file not found: {path}.")
        lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    if suffix == ".txt":
        if pair_field:
            raise DataError(f"{name}: plain text has one text per line; sentence pairs need .jsonl, .csv or .tsv input.")
        records = _text_records(lines, field)
    elif suffix == ".jsonl":
        records = _jsonl_records(lines, name)
    else:
        records = _csv_records(lines, name, "\t" if suffix == ".tsv" else ",")
    out = list(_check_fields(records, name, [field] + ([pair_field] if pair_field else []), field_option))
    if not out:
        raise DataError(f"{name}: no input records (the input is empty).")
    return out
