"""Reading .txt, .jsonl, .csv and .tsv files (or stdin) line by line, as records with line numbers.

The one reader of line-based data in llmtune: predict/generate stream their inputs with `open_records`,
and training checks its local files with `iter_records` before `datasets` loads them
(`llmtune.data.check_file`), so every problem names the file and the line it is on, the same way for both:
`reviews.jsonl, line 7: invalid JSON (...)`, `data.train_file: train.tsv, line 7: ...`.

Files are streamed, one line at a time, never held in memory whole.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

from llmtune.config.validate import suggest
from llmtune.errors import DataError

# File extension -> format; `--input-format`-style names are the same without the dot.
FORMATS = {".txt": ".txt", ".jsonl": ".jsonl", ".ndjson": ".jsonl", ".csv": ".csv", ".tsv": ".tsv"}


class Record(NamedTuple):
    """One data row: the 1-based line number it starts on and its fields."""

    line: int
    fields: dict[str, Any]


def _not_utf8(name: str, number: int, raw: bytes, exc: UnicodeDecodeError, start: int) -> DataError:
    byte = start + exc.start
    return DataError(
        f"{name}, line {number}: byte {byte + 1} of the line (0x{raw[byte]:02x}) is not valid UTF-8. "
        "Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 OLD > NEW` (or save it as UTF-8 from your editor)."
    )


def _lines_one_by_one(stream: Iterable[bytes], name: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(stream, start=1):
        start = 3 if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
        try:
            yield number, raw[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(name, number, raw, exc, start) from None


def decoded_lines(stream: IO[bytes] | Iterable[bytes], name: str) -> Iterator[tuple[int, str]]:
    """Each line of a byte stream as (1-based line number, text), decoded as UTF-8.

    A UTF-8 byte order mark at the start is dropped (Excel writes one). Lines end at `\\n` only, like
    `wc -l`, editors and the `datasets` text builder.

    Raises:
        DataError: a line is not valid UTF-8, naming the line, the byte and the fix.
    """
    if not (hasattr(stream, "seekable") and stream.seekable()):
        yield from _lines_one_by_one(stream, name)
        return
    # A file: let io decode it in large chunks (several times faster than line by line), and only when
    # that fails read it again line by line to say where.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="\n")
    try:
        yield from enumerate(text, start=1)
    except UnicodeDecodeError:
        raw, text = text.detach(), None
        raw.seek(0)
        for _ in _lines_one_by_one(raw, name):
            pass  # raises DataError at the first bad line
        raise
    finally:
        if text is not None and not stream.closed:
            text.detach()  # leave the stream open for its owner (a wrapper closes it when collected)


def _text_records(lines: Iterable[tuple[int, str]], field: str) -> Iterator[Record]:
    # Every line is a record, blank ones included, so the output lines up with the input (`paste`)
    # and, for training, so record N is row N of the `datasets` text builder.
    for number, line in lines:
        yield Record(number, {field: line.rstrip("\r\n")})


def _jsonl_records(lines: Iterable[tuple[int, str]], name: str) -> Iterator[Record]:
    for number, line in lines:
        if not line.strip():
            continue  # `datasets` skips blank lines too
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}, line {number}: invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one JSON object.") from None
        if not isinstance(row, dict):
            raise DataError(f"{name}, line {number}: expected a JSON object like {{\"text\": \"...\"}}, got a {type(row).__name__}. Each line must be one JSON object.")
        yield Record(number, row)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _csv_records(lines: Iterable[tuple[int, str]], name: str, delimiter: str, column_names: list[str] | None) -> Iterator[Record]:
    """Rows of a csv/tsv file as records, checking that every row has one cell per column.

    `datasets` reads these with pandas, which silently fills a short row with NaN and fails on a long
    one without saying where; this finds both, by line. The header is the first non-blank line unless
    `column_names` names the columns of a headerless file.
    """
    kind = "TSV" if delimiter == "\t" else "CSV"
    # TSV is read unquoted (as llmtune.data has `datasets` read it): a stray '"' must not swallow lines.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    # pandas skips blank lines, spaces-only ones included; a line with a delimiter is a row of empty cells.
    blank = " \r\n" if delimiter == "\t" else " \t\r\n"
    # pandas has no cell size limit; the csv module's default (128 KiB) would refuse a long document.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    # Every line goes to the csv module (a quoted cell may hold blank lines), so its line_num is the file's line number.
    reader = csv.reader((line for _, line in lines), delimiter=delimiter, quoting=quoting)
    header = list(column_names) if column_names else None
    where = "data.column_names" if column_names else "the header"
    fix = "Remove the stray tab(s) (TSV cells cannot contain tabs)" if kind == "TSV" else 'Quote cells that contain commas ("a, b")'
    rows = end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells or len(cells) == 1 and not cells[0].strip(blank):
                continue
            if header is None:
                header = cells
                continue
            if len(cells) != len(header):
                columns = f"{where} has {_plural(len(header), 'column')} ({', '.join(header)})"
                if len(cells) > len(header):
                    raise DataError(f"{name}, line {start}: more cells than header columns: {_plural(len(cells), 'cell')}, {columns}. {fix}.")
                raise DataError(
                    f"{name}, line {start}: fewer cells than header columns: {_plural(len(cells), 'cell')}, {columns}. "
                    f"Fill in the missing cells (empty cells still need their {'tab' if kind == 'TSV' else 'comma'}) or delete the line."
                )
            rows += 1
            yield Record(start, dict(zip(header, cells)))
    except csv.Error as exc:
        raise DataError(f"{name}, line {reader.line_num}: cannot parse as {kind}: {exc}.") from None
    if rows == 0 and header is not None and not column_names:
        raise DataError(f"{name}: no data rows, only the header line ({', '.join(header)}). Add rows below the header.")


def iter_records(path_or_stream: str | Path | IO[bytes] | Iterable[bytes], fmt: str, name: str, field: str = "text",
                 column_names: list[str] | None = None) -> Iterator[Record]:
    """Stream the records of a line-based file, one line at a time, each with the line it starts on.

    Args:
        path_or_stream: a file path, or a byte stream (stdin's buffer).
        fmt: `.txt` (one record per line, blank ones included), `.jsonl` (one JSON object per non-blank
            line), `.csv` or `.tsv` (a header line of column names, then one row per line).
        name: how messages name the input: `reviews.jsonl`, `stdin` or `data.train_file: train.tsv`.
        field: for .txt, the field each line's text is stored under.
        column_names: the columns of a headerless .csv/.tsv (its first line is then data).

    Yields:
        Records in file order: record N is row N of what `datasets` loads from the same file.

    Raises:
        DataError: non-UTF-8 bytes, invalid JSON, a line that is not a JSON object, a csv/tsv row with
            more or fewer cells than columns, or no data rows at all; naming the line and the fix.
    """
    if isinstance(path_or_stream, (str, Path)):
        with open(path_or_stream, "rb") as stream:
            yield from iter_records(stream, fmt, name, field, column_names)
        return
    lines = decoded_lines(path_or_stream, name)
    if fmt == ".txt":
        records = _text_records(lines, field)
    elif fmt == ".jsonl":
        records = _jsonl_records(lines, name)
    elif fmt in (".csv", ".tsv"):
        records = _csv_records(lines, name, "\t" if fmt == ".tsv" else ",", column_names)
    else:
        raise ValueError(f"not a line-based format: {fmt}")
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        raise DataError(f"{name}: no data rows (it is empty{'' if fmt == '.txt' else ' or blank'}). Put at least one example in it.")


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


def _stdin_lines() -> Iterator[bytes]:
    buffer = getattr(sys.stdin, "buffer", None)
    return iter(buffer) if buffer is not None else (line.encode("utf-8") for line in sys.stdin)


def read_records(
    path_or_dash: str | Path,
    field: str = "text",
    pair_field: str | None = None,
    fmt: str | None = None,
    field_option: str = "--text-field/--text-pair-field",
) -> list[Record]:
    """Read every record of an inference input at once: `open_records` collected into a list."""
    return list(open_records(path_or_dash, field, pair_field, fmt, field_option))


def open_records(
    path_or_dash: str | Path,
    field: str = "text",
    pair_field: str | None = None,
    fmt: str | None = None,
    field_option: str = "--text-field/--text-pair-field",
) -> Iterator[Record]:
    """Stream the records of an inference input, checking each one for the text field(s) as it is read.

    What can be checked without reading rows (the format, that the file exists, pairs in plain text) is
    checked now; each row is checked when the returned iterator reaches it, so a caller that streams
    its results has handed on the records before a bad row when the error comes.

    Args:
        path_or_dash: a .txt (one text per line), .jsonl (one object per line), .csv or .tsv file (header
            row with column names), or `-` for stdin (JSON Lines if it starts with `{`, else text lines).
        field: the field/column holding the text; for .txt input the name each line's text is stored under.
        pair_field: the second text of a sentence pair (not available for .txt input).
        fmt: txt, jsonl, csv or tsv, overriding the file extension (and stdin's guess).
        field_option: how the user names the field, for the hint when it is missing.

    Returns:
        An iterator over the records in input order, each with its line number.

    Raises:
        DataError: now: unknown file type or format, a missing file, pairs asked of plain text; while
            iterating: an empty input, non-UTF-8 bytes, invalid JSON/CSV or a missing field, naming the line.
    """
    given = FORMATS.get(f".{fmt}") if fmt else None
    if fmt and given is None:
        raise DataError(f"--input-format: expected one of {', '.join(f[1:] for f in FORMATS)}, got {fmt!r}.")
    if str(path_or_dash) == "-":
        name, source = "stdin", _stdin_lines()
        suffix = given
        if suffix is None:
            # stdin has no file name: JSON Lines if the first non-blank line is a JSON object, else plain text.
            head = []
            for raw in source:
                head.append(raw)
                if raw.strip():
                    break
            suffix = ".jsonl" if head and head[-1].lstrip().startswith((b"{", codecs.BOM_UTF8 + b"{")) else ".txt"
            source = chain(head, source)
    else:
        path = Path(path_or_dash)
        name, suffix = str(path), given or FORMATS.get(path.suffix.lower())
        if suffix is None:
            raise DataError(
                f"--input: unsupported file type '{path.suffix}' ({path}); use one of {', '.join(FORMATS)} or - for stdin, "
                f"or say how to read it with --input-format {'|'.join(sorted(set(f[1:] for f in FORMATS.values())))}."
            )
        if not path.is_file():
            raise DataError(f"--input: file not found: {path}.")
        source = path
    if suffix == ".txt" and pair_field:
        raise DataError(f"{name}: plain text has one text per line; sentence pairs need .jsonl, .csv or .tsv input.")
    records = iter_records(source, suffix, name, field)
    return _check_fields(records, name, [field] + ([pair_field] if pair_field else []), field_option)
