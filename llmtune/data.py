"""Data loading: local files or Hub data sets -> `datasets.DatasetDict`, labels, splits, tokenization.

Every problem with the user's data raises `DataError` naming the config key, the file and the fix.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.config.validate import suggest
from llmtune.errors import DataError
from llmtune.lm import IGNORE_INDEX
from llmtune.modeling import context_length, settings_kept

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from llmtune.config.schema import DataSection

# File extension -> (datasets builder, extra builder kwargs).
FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    # TSV corpora (GLUE and co.) are unquoted: a stray '"' inside a sentence must not swallow lines.
    ".tsv": ("csv", {"sep": "\t", "quoting": csv.QUOTE_NONE}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".txt": ("text", {}),
}
SPLIT_KEYS = {"train": "data.train_file", "validation": "data.validation_file", "test": "data.test_file"}


def file_format(path: str | Path, fmt: str | None = None) -> str:
    """The format a data file is read as, as an extension (`.txt`): `fmt` (`data.format`) if set, else the file's own."""
    return f".{fmt}" if fmt else Path(path).suffix.lower()


def check_file(
    path: str | Path, key: str, column_names: list[str] | None = None, columns: dict[str, str | None] | None = None, fmt: str | None = None
) -> int | None:
    """Check a local .csv/.tsv/.jsonl/.txt file line by line before `datasets` loads it.

    `datasets` fails on such files with "An error occurred while generating the dataset" and no line, or
    silently loads NaN/None (a short csv row, a JSON line without a column the others have). This streams
    the file through `llmtune.inputs.iter_records`, the reader predict/generate use, holding one line at a time.

    Args:
        path: the file; other formats (.json, .parquet) are left to `datasets`.
        key: the config key that named it (`data.train_file`), the start of every message.
        column_names: the columns of a headerless csv/tsv.
        columns: config key -> column the task reads (`data.text_column`: `sentence`); a JSON line
            without a column that other lines have is an error. A column no line has is left to
            `require_columns`, which lists the columns there are.
        fmt: `data.format` (txt, csv, ...), which overrides the file's extension.

    Returns:
        The number of data rows; None for a format without lines.

    Raises:
        DataError: naming the key, the file, the line, what is wrong and the fix.
    """
    from llmtune.inputs import FORMATS as LINE_FORMATS
    from llmtune.inputs import iter_records

    fmt = LINE_FORMATS.get(file_format(path, fmt))
    if fmt is None:
        return None
    name = f"{key}: {path}"
    wanted = {k: c for k, c in (columns or {}).items() if c is not None}
    seen: set[str] = set()
    first_missing: dict[str, int] = {}
    rows = 0
    for record in iter_records(path, fmt, name, column_names=column_names):
        rows += 1
        if fmt != ".jsonl":
            continue  # csv/tsv rows all have the header's columns (iter_records checks), txt rows have `text`
        for config_key, column in wanted.items():
            if column not in record.fields:
                first_missing.setdefault(column, record.line)
                continue
            seen.add(column)
            value = record.fields[column]
            if config_key != "data.label_column" and value is not None and not isinstance(value, str):
                raise DataError(
                    f"{name}, line {record.line}: '{column}' ({config_key}) must be a string, got {json.dumps(value)[:60]}. "
                    "Quote it, or point the key at a text column."
                )
    for config_key, column in wanted.items():
        if column in seen and column in first_missing:
            raise DataError(
                f"{name}, line {first_missing[column]}: no field '{column}' ({config_key}), which other lines have. "
                "Add it to that line or delete the line."
            )
    return rows


def line_of(path: str | Path, row: int, column_names: list[str] | None = None, fmt: str | None = None) -> int | None:
    """The line of a local file that row `row` (0-based) of its loaded `Dataset` came from; None for .json/.parquet.

    Blank lines, a header and quoted multi-line cells make the two differ; errors are rare, so the file
    is read again here rather than keeping a row -> line table for every run.
    """
    from llmtune.inputs import FORMATS as LINE_FORMATS
    from llmtune.inputs import iter_records

    fmt = LINE_FORMATS.get(file_format(path, fmt))
    if fmt is None:
        return None
    for index, record in enumerate(iter_records(path, fmt, str(path), column_names=column_names)):
        if index == row:
            return record.line
    return None


def where(data: Any, role: str, row: int) -> str:
    """Where row `row` (0-based) of a split is, for messages: `data.validation_file: dev.tsv, line 3`.

    Hub data has no lines: `data.hub (glue) validation split, row 2`.
    """
    path = getattr(data, f"{role}_file", None) if getattr(data, "hub", None) is None else None
    if path is None:
        hub = getattr(data, "hub", None)
        return f"data.hub ({hub.path}) {role} split, row {row + 1}" if hub is not None else f"{SPLIT_KEYS.get(role, role)}: row {row + 1}"
    line = line_of(path, row, getattr(data, "column_names", None), getattr(data, "format", None))
    return f"{SPLIT_KEYS.get(role, role)}: {path}, " + (f"line {line}" if line is not None else f"row {row + 1}")


def _cause(exc: BaseException) -> str:
    """The first line of the innermost cause: `datasets` wraps the parser's message in a generic one."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_file(
    path: str | Path, key: str, column_names: list[str] | None = None, columns: dict[str, str | None] | None = None, fmt: str | None = None
) -> Dataset:
    """Load one local data file as a `datasets.Dataset`, after `check_file` has read it line by line.

    Args:
        path: a .csv, .tsv, .json, .jsonl, .parquet or .txt file (.txt: one example per line, column `text`).
        key: the config key that named the file, for error messages (e.g. `data.train_file`).
        column_names: names for the columns of a headerless csv/tsv file.
        columns: config key -> column the task reads, for `check_file`.
        fmt: `data.format` (txt, csv, tsv, json, jsonl, parquet): read the file as this, whatever its extension.

    Raises:
        DataError: the file is missing, of an unknown format, or cannot be parsed (naming the line when it has lines).
    """
    from datasets import load_dataset

    path = Path(path)
    read_as = file_format(path, fmt)
    builder_kwargs = FORMATS.get(read_as)
    if builder_kwargs is None:
        raise DataError(
            f"{key}: unsupported file type '{path.suffix}' ({path}); use one of {', '.join(FORMATS)}, or say how to read it "
            f"with data.format: {'|'.join(f[1:] for f in FORMATS)} (a WikiText .raw file is txt)."
        )
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}. Fix the path (relative paths in a config resolve against the config's folder).")
    builder, kwargs = builder_kwargs
    kwargs = dict(kwargs)
    if column_names:
        if builder != "csv":
            raise DataError(f"data.column_names applies to headerless .csv/.tsv files, not {path.name}.")
        kwargs["column_names"] = list(column_names)
    check_file(path, key, column_names, columns, fmt)
    try:
        return load_dataset(builder, data_files={"data": str(path)}, split="data", **kwargs)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow/json raise many types; all mean "cannot parse"
        how = f"data.format: {fmt}" if fmt else read_as
        raise DataError(f"{key}: cannot read {path} as {how} data: {_cause(exc)}") from exc


def load_hub(data: DataSection) -> DatasetDict:
    """Load a Hub data set's splits, with one clear message when the Hub cannot be reached."""
    from datasets import DatasetDict, load_dataset

    hub = data.hub
    try:
        loaded = load_dataset(hub.path, hub.name, revision=hub.revision)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id and auth errors all end here
        raise DataError(
            f"data.hub: cannot load '{hub.path}'{f' ({hub.name})' if hub.name else ''} from the Hugging Face Hub: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}. "
            "Offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set, or no network)? Download it once online, "
            "or export it to a file and use data.train_file."
        ) from exc
    splits = {"train": hub.train_split, "validation": hub.validation_split, "test": hub.test_split}
    out = {}
    for role, split in splits.items():
        if split is None:
            continue
        if split not in loaded:
            raise DataError(f"data.hub.{role}_split: '{hub.path}' has no split '{split}'; it has {', '.join(loaded)}.")
        out[role] = loaded[split]
    return DatasetDict(out)


def load_splits(data: DataSection, columns: dict[str, str | None] | None = None) -> DatasetDict:
    """Load the train/validation/test splits named in `data:` and cap them to max_*_samples.

    A validation split carved out of train (`data.validation_split`) is left to the task, which knows
    whether to stratify by label.

    Args:
        data: the data section.
        columns: config key -> column the task reads (`data.text_column`: `text`); when given, every
            split must have them (`require_columns`) and local files are checked for lines without them.
    """
    from datasets import DatasetDict

    if data.hub is not None:
        splits = load_hub(data)
    else:
        files = {"train": data.train_file, "validation": data.validation_file, "test": data.test_file}
        splits = DatasetDict(
            {
                # A {source, target} pair of line-aligned text files (task: seq2seq) becomes those two columns.
                role: load_file(path, SPLIT_KEYS[role], data.column_names, columns, data.format)
                if isinstance(path, str)
                else load_parallel(path, SPLIT_KEYS[role], data.source_column, data.target_column)
                for role, path in files.items()
                if path
            }
        )
    for role, ds in splits.items():
        if len(ds) == 0:
            raise DataError(f"{SPLIT_KEYS[role]}: the {role} data has no rows.")
    if columns:
        require_columns(splits, columns)
    return cap_samples(splits, data)


def cap_samples(splits: DatasetDict, data: DataSection) -> DatasetDict:
    """Keep only the first max_train_samples / max_eval_samples rows."""
    for role in list(splits):
        limit = data.max_train_samples if role == "train" else data.max_eval_samples
        if limit is not None and len(splits[role]) > limit:
            splits[role] = splits[role].select(range(limit))
    return splits


def require_columns(splits: DatasetDict, columns: dict[str, str | None]) -> None:
    """Check that every split has the configured columns.

    Args:
        splits: the loaded splits.
        columns: config key (e.g. `data.text_column`) -> column name (None = not used).

    Raises:
        DataError: naming the key, the split, the missing column and the columns that do exist.
    """
    for role, ds in splits.items():
        for key, name in columns.items():
            if name is not None and name not in ds.column_names:
                hint = suggest(name, ds.column_names)
                headerless = " Headerless file? Name its columns with data.column_names." if role != "hub" else ""
                raise DataError(
                    f"{key}: column '{name}' not found in the {role} data (columns: {', '.join(ds.column_names)}).{hint}{headerless}"
                )


def split_validation(splits: DatasetDict, data: DataSection, seed: int, stratify_by: str | None = None) -> DatasetDict:
    """Hold out `data.validation_split` of train as validation when there is no validation data.

    Args:
        stratify_by: a ClassLabel column to keep label proportions equal in both parts.
    """
    if "validation" in splits or data.validation_split is None:
        return splits
    parts = splits["train"].train_test_split(test_size=data.validation_split, seed=seed, stratify_by_column=stratify_by)
    splits["train"], splits["validation"] = parts["train"], parts["test"]
    return cap_samples(splits, data)


def with_validation(splits: DatasetDict, data: DataSection, seed: int, stratify_by: str | None = None) -> DatasetDict:
    """`split_validation` for a training run, which cannot go on without validation data.

    Raises:
        DataError: no validation file, Hub split or validation_split.
    """
    splits = split_validation(splits, data, seed, stratify_by)
    if "validation" not in splits:
        raise DataError("data: no validation data. Set data.validation_file or data.validation_split: 0.1 (or data.hub.validation_split).")
    return splits


def encode_labels(splits: DatasetDict, data: DataSection) -> tuple[DatasetDict, list[str]]:
    """Turn the label column into class ids 0..n-1 (a `ClassLabel` column named `labels`).

    Integer labels keep their values (named by data.label_names when given); string labels are
    sorted and numbered, and the names go into the model config's id2label.

    Returns:
        The splits with a `labels` column, and the label names in id order.

    Raises:
        DataError: missing labels, labels of mixed type, or a validation/test label unseen in training.
    """
    from datasets import ClassLabel

    column = data.label_column
    # `[:]` reads the column as one list, in one batch; a datasets Column iterated (as the checks below
    # do, several times) formats every row on its own: 1 s per pass over 20k rows.
    values = {role: ds[column][:] for role, ds in splits.items()}
    for role, vals in values.items():
        for row, value in enumerate(vals):
            if value is None or isinstance(value, float) and value != value:
                raise DataError(f"{where(data, role, row)}: no label in column '{column}'. Fill it in or delete the line.")
            if isinstance(value, float) and not value.is_integer():
                raise DataError(
                    f"{where(data, role, row)}: label {value} in '{column}': labels must be class ids or names. "
                    "For regression targets llmtune has no task yet."
                )
    train_values = values["train"]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in train_values):
        top = max(int(v) for v in train_values)
        names = list(data.label_names) if data.label_names else [str(i) for i in range(top + 1)]
        to_id = {i: i for i in range(len(names))}
        convert = int
    else:
        seen = sorted({str(v) for v in train_values})
        names = list(data.label_names) if data.label_names else seen
        to_id = {name: i for i, name in enumerate(names)}
        convert = str
    if len(names) < 2:
        raise DataError(f"data.label_column: the training data has a single label ({names[0]!r}); classification needs at least two.")
    for role, vals in values.items():
        for row, value in enumerate(vals):
            if convert(value) not in to_id:
                known = ", ".join(map(str, to_id))
                raise DataError(
                    f"{where(data, role, row)}: label {value!r} is not a known label ({known}). "
                    + ("Set data.label_names to list every label." if data.label_names is None else "Add it to data.label_names.")
                )

    features_label = ClassLabel(names=names)

    def _encode(batch: dict[str, list]) -> dict[str, list]:
        return {"labels": [to_id[convert(v)] for v in batch[column]]}

    for role in list(splits):
        ds = splits[role].map(_encode, batched=True, desc=f"labels ({role})")
        splits[role] = ds.cast_column("labels", features_label)
    return splits, names


def tokenize_texts(splits: DatasetDict, tokenizer: Any, data: DataSection, keep: tuple[str, ...] = ("labels",)) -> DatasetDict:
    """Tokenize text (and text pair) columns, truncating to data.max_length, without padding.

    Padding happens per batch in the collator (dynamic padding), never to max_length here.
    """
    max_length = context_length(tokenizer, None, data.max_length)

    def _tokenize(batch: dict[str, list]) -> dict[str, Any]:
        first = [str(t) if t is not None else "" for t in batch[data.text_column]]
        second = None
        if data.text_pair_column:
            second = [str(t) if t is not None else "" for t in batch[data.text_pair_column]]
        return tokenizer(first, second, truncation=True, max_length=max_length)

    out = {}
    with settings_kept(tokenizer):
        for role, ds in splits.items():
            remove = [c for c in ds.column_names if c not in keep]
            out[role] = ds.map(_tokenize, batched=True, remove_columns=remove, desc=f"tokenizing ({role})")
    return type(splits)(out)


# Token columns a tokenizer may return, in the order packing keeps them.
PACKED_KEYS = ("input_ids", "attention_mask", "special_tokens_mask", "token_type_ids", "offset_mapping")


def pack_blocks(tokenized: Dataset, block_size: int, pad_token_id: int, labels: bool = False) -> Dataset:
    """Concatenate a split's tokenized texts and cut them into fixed-length blocks of `block_size` tokens.

    Unlike run_clm's `group_texts`, which works per `map` batch and drops each batch's remainder, the whole
    split is one stream: every block is full, and the split's last, shorter piece is kept (no text is silently
    lost) as one block padded to full length: pad token, attention_mask 0, special_tokens_mask 1 (masked-LM
    collators never choose it), label -100. Every column is an Arrow FixedSizeList, so a batch is a slice of
    one array and needs no per-step padding.

    The blocks are cut by a `datasets.map` over the tokenized rows: each row batch emits the blocks that start
    in it, reading their tokens (possibly from later rows) from the flattened, memory-mapped token columns, so
    no Python list of all tokens is ever built. Its fingerprint is derived from the tokenized split's, so a
    second run reuses the cached blocks as it reuses the tokenization.

    Args:
        tokenized: one split, one row per text (input_ids, attention_mask, ...), without an indices mapping
            (the output of a `map`).
        block_size: tokens per block.
        pad_token_id: the id that fills the last block.
        labels: also store `labels` (the input ids, -100 on padding), as a causal LM trains on them.

    Returns:
        A Dataset of ceil(tokens / block_size) blocks.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Features, List, Value
    from datasets.fingerprint import Hasher

    keys = [k for k in PACKED_KEYS if k in tokenized.column_names]
    table = tokenized.with_format(None).data
    flat = {k: pc.list_flatten(table.column(k)) for k in keys}
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
    # starts[i]: position of row i's first token in the split's stream; starts[-1]: the total.
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    total = int(starts[-1])
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "special_tokens_mask": 1, "token_type_ids": 0, "offset_mapping": [0, 0]}

    def column(name: str, values: pa.ChunkedArray, pad: int) -> pa.Array:
        values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if pad:
            values = pa.concat_arrays([values, pa.array([fill[name]] * pad, type=values.type)])
        return pa.FixedSizeListArray.from_arrays(values, block_size)

    def _blocks(batch: Any, indices: list[int]) -> pa.Table:
        # The blocks whose first token lies in this batch's rows [first, last].
        first, last = indices[0], indices[-1] + 1
        begin = -(-int(starts[first]) // block_size)
        end = -(-int(starts[last]) // block_size)
        lo, hi = begin * block_size, min(end * block_size, total)
        pad = (end - begin) * block_size - (hi - lo)
        out = {k: column(k, flat[k].slice(lo, hi - lo), pad) for k in keys}
        if labels:
            ids = out["input_ids"].flatten()
            mask = out["attention_mask"].flatten() if "attention_mask" in out else pa.array(np.ones(len(ids), dtype=np.int8))
            scored = pc.if_else(pc.equal(mask, 0), pa.scalar(IGNORE_INDEX, ids.type), ids)
            out["labels"] = pa.FixedSizeListArray.from_arrays(scored, block_size)
        return pa.table(out)

    def fixed(feature: Any) -> List:
        return List(feature.feature, length=block_size)

    features = Features({k: fixed(tokenized.features[k]) for k in keys})
    if labels:
        features["labels"] = List(tokenized.features["input_ids"].feature, length=block_size)
    fingerprint = Hasher.hash(["llmtune.pack_blocks/1", tokenized._fingerprint, block_size, pad_token_id, labels])
    return tokenized.with_format("arrow").map(
        _blocks, batched=True, batch_size=1000, with_indices=True, remove_columns=tokenized.column_names,
        features=features, new_fingerprint=fingerprint, desc="packing",
    ).with_format(None)


def tokenize_for_lm(
    splits: DatasetDict, tokenizer: Any, data: DataSection, packing: bool, add_eos: bool = False, offsets: bool = False, labels: bool = False
) -> DatasetDict:
    """Tokenize text for language modelling: packed into max_length blocks, or one example per row.

    Args:
        splits: splits with `data.text_column`.
        tokenizer: the run's tokenizer.
        data: the `data:` section (text_column, max_length).
        packing: concatenate and cut into fixed-length blocks (True, see `pack_blocks`) or keep each row as its
            own example, truncated.
        add_eos: append the EOS token to every text (causal LM: documents end where the model should stop).
        offsets: also keep offset_mapping (whole-word masking finds word boundaries with it; fast tokenizers only).
        labels: packed blocks also carry `labels` (causal LM: the inputs, -100 on the last block's padding).

    Returns:
        Splits with input_ids/attention_mask (and special_tokens_mask for MLM, labels when asked) only;
        empty rows dropped.
    """
    column = data.text_column
    block = context_length(tokenizer, None, data.max_length)
    eos = tokenizer.eos_token if add_eos and tokenizer.eos_token else ""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _tokenize(batch: dict[str, list]) -> dict[str, Any]:
        texts = [str(t) + eos for t in batch[column] if t is not None and str(t).strip()]
        if packing:
            # Special tokens ([CLS]/[SEP]) once per text; pack_blocks then cuts blocks across texts.
            return tokenizer(texts, return_special_tokens_mask=True, return_offsets_mapping=offsets)
        return tokenizer(texts, truncation=True, max_length=block, return_special_tokens_mask=True, return_offsets_mapping=offsets)

    if packing:
        # Texts longer than the model's maximum are expected here (pack_blocks cuts them into blocks): tell
        # transformers its "Token indices sequence length is longer than ..." warning was given, so it is not.
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    out = {}
    for role, ds in splits.items():
        with settings_kept(tokenizer):
            out[role] = ds.map(_tokenize, batched=True, batch_size=1000, remove_columns=ds.column_names, desc=f"tokenizing ({role})")
        if len(out[role]) == 0:
            raise DataError(f"{SPLIT_KEYS.get(role, role)}: no text left after tokenizing column '{column}' (every row is empty).")
        if packing:
            out[role] = pack_blocks(out[role], block, pad_id, labels=labels)
    return type(splits)(out)


def read_text_lines(path: str | Path, key: str) -> list[str]:
    """The lines of a plain UTF-8 text file, each one required to hold text (a side of a parallel corpus).

    Args:
        path: the file.
        key: the config key that named it (`data.train_file.source`), the start of every message.

    Returns:
        The lines without their line endings (LF or CRLF).

    Raises:
        DataError: a missing or empty file, bad UTF-8 or an empty line, naming the key, file and line.
    """
    from llmtune.inputs import decoded_lines

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path}. Fix the path (relative paths in a config resolve against the config's folder).")
    out = []
    with path.open("rb") as stream:
        for number, line in decoded_lines(stream, f"{key}: {path}"):
            text = line.removesuffix("\n").removesuffix("\r")
            if not text.strip():
                # An empty line is usually a sentence lost in alignment; skipping it would shift every later pair.
                raise DataError(
                    f"{key}: {path}, line {number}: empty line; every line needs text. Delete it together with the same line of the other side's file."
                )
            out.append(text)
    if not out:
        raise DataError(f"{key}: {path} is empty; it needs one example per line.")
    return out


def load_parallel(files: Any, key: str, source_column: str, target_column: str) -> Dataset:
    """Load a line-aligned pair of text files (`{source: train.en, target: train.fr}`) as one Dataset of two columns.

    Args:
        files: a `ParallelFiles` (source and target paths).
        key: the config key that named the pair (`data.train_file`).
        source_column: the column the source lines go into (data.source_column).
        target_column: the column the target lines go into (data.target_column).

    Raises:
        DataError: either file missing, empty, not UTF-8 or with an empty line (file:line), or the two files
            having different numbers of lines (naming both files and their line counts).
    """
    from datasets import Dataset

    sources = read_text_lines(files.source, f"{key}.source")
    targets = read_text_lines(files.target, f"{key}.target")
    if len(sources) != len(targets):
        raise DataError(
            f"{key}: the two sides are not line-aligned: {files.source} has {len(sources)} lines but {files.target} has "
            f"{len(targets)}. Line i of the target file must translate line i of the source file; fix the files so their "
            "line counts match."
        )
    return Dataset.from_dict({source_column: sources, target_column: targets})
