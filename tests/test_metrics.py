"""Tests of llmtune.metrics: the shipped evaluate modules against independent computations.

Every test runs with the Hugging Face offline switches set and with network sockets blocked, so a
metric that tried to reach the Hub would fail here instead of hanging on a network timeout.
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub/datasets/evaluate, which read these once at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from llmtune.errors import UserError  # noqa: E402
from llmtune.metrics import SHIPPED, load, module_path  # noqa: E402

# Small fixed label arrays: binary, and 3-class with every class present in both.
BIN_REFS = [0, 1, 1, 0, 1, 0, 1, 1, 0, 0]
BIN_PREDS = [0, 1, 0, 0, 1, 1, 1, 0, 0, 1]
MC_REFS = [0, 1, 2, 2, 1, 0, 2, 1, 0, 2, 1, 0]
MC_PREDS = [0, 2, 2, 2, 1, 0, 1, 1, 0, 0, 1, 2]
WEIGHTS = [1.0, 2.0, 0.5, 1.0, 1.5, 1.0, 3.0, 1.0, 0.25, 1.0]

HYPS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog!",
    "It is raining today, isn't it?",
    "We trained the model for three epochs.",
]
REFS_A = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumped over the lazy dog.",
    "It's raining today, is it not?",
    "The model was trained for three epochs.",
]
REFS_B = [
    "A cat sat on the mat.",
    "A fast brown fox leaps over a lazy dog!",
    "Today it is raining, isn't it?",
    "We trained the model for 3 epochs.",
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Block and record every attempt to resolve or connect to a network host."""
    attempts: list[tuple] = []
    real_connect = socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise OSError(f"network blocked in tests (getaddrinfo {host!r})")

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(("connect", address))
            raise OSError(f"network blocked in tests (connect {address!r})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"tried to reach the network: {attempts}"


def compute(name: str, **kwargs):
    """Load a shipped metric (in memory, no cache files) and compute it."""
    return load(name, keep_in_memory=True).compute(**kwargs)


# --- loading -------------------------------------------------------------------------------------


def test_package_import_is_light():
    # `import llmtune.metrics` (and the metric folders) must not pull in evaluate, sklearn, torch...
    code = (
        "import sys, llmtune.metrics, llmtune.metrics.accuracy, llmtune.metrics.bleu, llmtune.metrics.rouge\n"
        "heavy = {'evaluate', 'datasets', 'sklearn', 'sacrebleu', 'rouge_score', 'nltk', 'torch', 'transformers'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", SHIPPED)
def test_load_shipped_metric_offline(name):
    import evaluate

    metric = load(name)
    assert isinstance(metric, evaluate.Metric)
    assert metric.name == name
    assert metric.description.strip() and metric.citation.strip() and metric.inputs_description.strip()
    assert metric.features is not None


def test_module_files_match_their_folders():
    for name in SHIPPED:
        path = module_path(name)
        assert path.is_file() and path.parent.name == name
        assert (path.parent / "__init__.py").is_file()  # a regular package, so the wheel ships it


def test_folder_path_form_also_loads():
    import evaluate

    # evaluate accepts the folder as well as the file when the file is named after the folder.
    metric = evaluate.load(str(module_path("accuracy").parent), keep_in_memory=True)
    assert metric.compute(predictions=[1, 0], references=[1, 1]) == {"accuracy": 0.5}


def test_module_files_work_from_a_fresh_modules_cache(tmp_path, monkeypatch):
    # evaluate copies only <name>.py into its modules cache and imports it from there, so each module
    # may import only installed packages (llmtune's shared _sklearn/_sacrebleu included), and its own
    # class must be the one evaluate picks (checked by the name). A uniquely named dynamic-modules
    # package in tmp_path is a cache that has never seen these files, whatever this process imported.
    from evaluate.loading import evaluation_module_factory, import_main_class, init_dynamic_modules

    monkeypatch.setattr(sys, "path", list(sys.path))  # init_dynamic_modules appends tmp_path
    package = f"llmtune_test_modules_{uuid.uuid4().hex}"
    dynamic_modules_path = init_dynamic_modules(name=package, hf_modules_cache=tmp_path)
    for name in SHIPPED:
        module = evaluation_module_factory(str(module_path(name)), dynamic_modules_path=dynamic_modules_path)
        assert (tmp_path / package / "metrics" / name / module.hash / f"{name}.py").is_file()
        metric = import_main_class(module.module_path)(keep_in_memory=True, hash=module.hash)
        assert metric.name == name
    for key in [k for k in sys.modules if k == package or k.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, key)


def test_compute_with_on_disk_cache(tmp_path):
    # evaluate's default (keep_in_memory=False) writes the inputs to Arrow files under cache_dir.
    metric = load("f1", cache_dir=str(tmp_path))
    assert metric.compute(predictions=BIN_PREDS, references=BIN_REFS) == pytest.approx(
        {"f1": _sk("f1_score", BIN_REFS, BIN_PREDS)}
    )


def test_unknown_metric_offline_raises_user_error():
    with pytest.raises(UserError) as info:
        load("no_such_metric_xyz")
    message = str(info.value)
    assert "'no_such_metric_xyz'" in message
    assert "not shipped with llmtune" in message
    assert "Hub" in message and "offline" in message
    for name in SHIPPED:
        assert name in message


def test_unknown_metric_online_failure_raises_user_error(monkeypatch):
    # Online, evaluate would ask the Hub; stand in for its failure without any network.
    import evaluate

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    calls = []

    def fake_load(path, **kwargs):
        calls.append(path)
        raise ConnectionError("Couldn't reach 'evaluate-metric/rougeish' on the Hub")

    monkeypatch.setattr(evaluate, "load", fake_load)
    with pytest.raises(UserError, match=r"'rougeish' is not shipped with llmtune.*offline\?") as info:
        load("rougeish")
    assert calls == ["rougeish"]
    assert "accuracy, f1, precision, recall, bleu, chrf" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_non_shipped_local_module_falls_through_to_evaluate(tmp_path):
    folder = tmp_path / "my_accuracy"
    folder.mkdir()
    shutil.copy(module_path("accuracy"), folder / "my_accuracy.py")
    metric = load(str(folder), keep_in_memory=True)
    assert metric.compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0]) == {"accuracy": 0.75}


def test_offline_switch_is_restored_after_fallback():
    from evaluate import config

    before = config.HF_EVALUATE_OFFLINE
    with pytest.raises(UserError):
        load("still_no_such_metric")
    assert config.HF_EVALUATE_OFFLINE == before


# --- classification metrics against scikit-learn --------------------------------------------------


def _sk(function: str, refs, preds, **kwargs):
    """The independent value: call scikit-learn directly."""
    import sklearn.metrics

    value = getattr(sklearn.metrics, function)(refs, preds, **kwargs)
    return value.tolist() if hasattr(value, "ndim") and value.ndim else float(value)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"normalize": False}, {"sample_weight": WEIGHTS}, {"normalize": False, "sample_weight": WEIGHTS}],
)
def test_accuracy_matches_sklearn(kwargs):
    result = compute("accuracy", predictions=BIN_PREDS, references=BIN_REFS, **kwargs)
    assert set(result) == {"accuracy"} and isinstance(result["accuracy"], float)
    assert result["accuracy"] == pytest.approx(_sk("accuracy_score", BIN_REFS, BIN_PREDS, **kwargs))


def test_accuracy_known_value():
    assert compute("accuracy", predictions=[0, 1, 1, 2, 1, 0], references=[0, 1, 2, 0, 1, 2]) == {"accuracy": 0.5}


def test_accuracy_multilabel_config():
    refs = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
    preds = [[1, 0, 1], [0, 1, 1], [1, 1, 0]]
    metric = load("accuracy", config_name="multilabel", keep_in_memory=True)
    assert metric.compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(2 / 3)


PRF = [("f1", "f1_score"), ("precision", "precision_score"), ("recall", "recall_score")]


@pytest.mark.parametrize(("name", "function"), PRF)
@pytest.mark.parametrize(
    ("refs", "preds", "kwargs"),
    [
        (BIN_REFS, BIN_PREDS, {}),  # average="binary", pos_label=1
        (BIN_REFS, BIN_PREDS, {"pos_label": 0}),
        (BIN_REFS, BIN_PREDS, {"sample_weight": WEIGHTS}),
        (MC_REFS, MC_PREDS, {"average": "macro"}),
        (MC_REFS, MC_PREDS, {"average": "weighted"}),
        (MC_REFS, MC_PREDS, {"average": "micro"}),
        (MC_REFS, MC_PREDS, {"average": "macro", "labels": [0, 2]}),
    ],
    ids=["binary", "binary-pos0", "binary-weighted-samples", "macro", "weighted", "micro", "macro-labels"],
)
def test_prf_matches_sklearn(name, function, refs, preds, kwargs):
    result = compute(name, predictions=preds, references=refs, **kwargs)
    assert set(result) == {name} and isinstance(result[name], float)
    assert result[name] == pytest.approx(_sk(function, refs, preds, **kwargs))


@pytest.mark.parametrize(("name", "function"), PRF)
def test_prf_average_none_is_a_list(name, function):
    result = compute(name, predictions=MC_PREDS, references=MC_REFS, average=None)
    assert isinstance(result[name], list) and len(result[name]) == 3
    assert result[name] == pytest.approx(_sk(function, MC_REFS, MC_PREDS, average=None))
    json.dumps(result)  # llmtune writes metrics to JSON


@pytest.mark.parametrize("name", ["f1", "precision", "recall"])
def test_prf_zero_division(name):
    # No predicted and no actual positives: every score is undefined, so zero_division decides.
    result = compute(name, predictions=[0, 0, 0], references=[0, 0, 0], zero_division=1.0)
    assert result == {name: 1.0}


def test_f1_known_value():
    # TP=1, FP=1, FN=1 -> precision 1/2, recall 1/2, F1 1/2.
    assert compute("f1", predictions=[0, 0, 1, 1, 0], references=[0, 1, 0, 1, 0]) == {"f1": 0.5}


# --- BLEU and chrF against sacreBLEU --------------------------------------------------------------

BLEU_KEYS = {"score", "counts", "totals", "precisions", "bp", "sys_len", "ref_len", "signature"}


def _assert_bleu_equal(result, expected):
    assert set(result) == BLEU_KEYS
    assert result["score"] == pytest.approx(expected.score)
    assert result["counts"] == expected.counts and result["totals"] == expected.totals
    assert result["precisions"] == pytest.approx(expected.precisions)
    assert result["bp"] == pytest.approx(expected.bp)
    assert (result["sys_len"], result["ref_len"]) == (expected.sys_len, expected.ref_len)


def test_bleu_single_reference_matches_sacrebleu():
    import sacrebleu

    result = compute("bleu", predictions=HYPS, references=[[r] for r in REFS_A])
    _assert_bleu_equal(result, sacrebleu.corpus_bleu(HYPS, [REFS_A]))
    assert result["signature"] == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    json.dumps(result)


def test_bleu_plain_string_references_mean_one_each():
    import sacrebleu

    result = compute("bleu", predictions=HYPS, references=REFS_A)
    _assert_bleu_equal(result, sacrebleu.corpus_bleu(HYPS, [REFS_A]))


def test_bleu_multi_reference_matches_sacrebleu():
    import sacrebleu

    refs = [[a, b] for a, b in zip(REFS_A, REFS_B)]
    result = compute("bleu", predictions=HYPS, references=refs)
    _assert_bleu_equal(result, sacrebleu.corpus_bleu(HYPS, [REFS_A, REFS_B]))
    assert result["signature"].startswith("nrefs:2|")


def test_bleu_variable_number_of_references():
    import sacrebleu

    refs = [[REFS_A[0], REFS_B[0]], [REFS_A[1]], [REFS_A[2], REFS_B[2]], [REFS_B[3]]]
    result = compute("bleu", predictions=HYPS, references=refs)
    # sacreBLEU's own convention for a missing reference is None in that reference stream.
    streams = [[REFS_A[0], REFS_A[1], REFS_A[2], REFS_B[3]], [REFS_B[0], None, REFS_B[2], None]]
    _assert_bleu_equal(result, sacrebleu.corpus_bleu(HYPS, streams))
    assert result["signature"].startswith("nrefs:var|")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lowercase": True},
        {"tokenize": "char"},
        {"tokenize": "none", "force": True},
        {"smooth_method": "floor", "smooth_value": 0.2},
        {"smooth_method": "add-k", "smooth_value": 2},
        {"smooth_method": "none"},
        {"use_effective_order": True},
    ],
)
def test_bleu_kwargs_match_sacrebleu(kwargs):
    import sacrebleu

    result = compute("bleu", predictions=HYPS, references=[[a, b] for a, b in zip(REFS_A, REFS_B)], **kwargs)
    _assert_bleu_equal(result, sacrebleu.corpus_bleu(HYPS, [REFS_A, REFS_B], **kwargs))


def test_bleu_known_values():
    assert compute("bleu", predictions=HYPS, references=HYPS)["score"] == pytest.approx(100.0)
    # By hand: n-gram precisions 3/4, 2/3, 1/2 and 0/1, the last smoothed by "exp" to 1/(2*1);
    # equal lengths so bp = 1; BLEU = 100 * (3/4 * 2/3 * 1/2 * 1/2) ** (1/4) = 100 * 0.125 ** 0.25.
    result = compute("bleu", predictions=["a b c d"], references=[["a b c e"]])
    assert result["counts"] == [3, 2, 1, 0] and result["totals"] == [4, 3, 2, 1] and result["bp"] == 1.0
    assert result["score"] == pytest.approx(100 * 0.125**0.25)
    unsmoothed = compute("bleu", predictions=["a b c d"], references=[["a b c e"]], smooth_method="none")
    assert unsmoothed["score"] == 0.0


@pytest.mark.parametrize("name", ["bleu", "chrf", "rouge"])
def test_bad_references_raise(name):
    with pytest.raises(ValueError):
        compute(name, predictions=HYPS[:2], references=[[REFS_A[0]], []])
    with pytest.raises(ValueError):
        compute(name, predictions=HYPS[:2], references=[[REFS_A[0]]])


def test_chrf_matches_sacrebleu():
    import sacrebleu

    result = compute("chrf", predictions=HYPS, references=[[r] for r in REFS_A])
    expected = sacrebleu.corpus_chrf(HYPS, [REFS_A])
    assert result["score"] == pytest.approx(expected.score)
    assert (result["char_order"], result["word_order"], result["beta"]) == (6, 0, 2)
    assert result["signature"] == f"nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:{sacrebleu.__version__}"
    json.dumps(result)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"word_order": 2},  # chrF++
        {"char_order": 4, "beta": 1},
        {"whitespace": True},
        {"eps_smoothing": True},
    ],
)
def test_chrf_multi_reference_matches_sacrebleu(kwargs):
    import sacrebleu

    result = compute("chrf", predictions=HYPS, references=[[a, b] for a, b in zip(REFS_A, REFS_B)], **kwargs)
    options = {"char_order": 6, "word_order": 0, "beta": 2, "eps_smoothing": False, **kwargs}
    # corpus_chrf spells `whitespace` as its negation, `remove_whitespace`.
    options["remove_whitespace"] = not options.pop("whitespace", False)
    expected = sacrebleu.corpus_chrf(HYPS, [REFS_A, REFS_B], **options)
    assert result["score"] == pytest.approx(expected.score)
    assert (result["char_order"], result["word_order"], result["beta"]) == (
        options["char_order"],
        options["word_order"],
        options["beta"],
    )


def test_chrf_lowercase_matches_sacrebleu():
    import sacrebleu

    # corpus_chrf has no lowercase option; sacreBLEU's CHRF class has.
    result = compute("chrf", predictions=HYPS, references=REFS_A, lowercase=True)
    expected = sacrebleu.CHRF(lowercase=True).corpus_score(HYPS, [REFS_A])
    assert result["score"] == pytest.approx(expected.score)
    assert result["score"] != pytest.approx(compute("chrf", predictions=HYPS, references=REFS_A)["score"])
    assert "|case:lc|" in result["signature"]


def test_chrf_known_value():
    assert compute("chrf", predictions=HYPS, references=HYPS)["score"] == pytest.approx(100.0)
    # No character in common at all: every n-gram precision and recall is 0.
    assert compute("chrf", predictions=["xyz"], references=[["abc"]])["score"] == 0.0


# --- ROUGE against rouge-score ------------------------------------------------------------------

ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
# Several sentences per text, one per line, so rougeLsum (summary-level LCS over lines) differs from rougeL.
SUMMARIES = [
    "The cat sat on the mat.\nIt was happy there.",
    "Police arrested two men on Monday.\nThey were released without charge.",
    "Training took three epochs.",
]
SUMMARY_REFS = [
    "It was a happy cat.\nThe cat sat on the mat.",
    "Two men were arrested by police on Monday.\nBoth were later released.",
    "The model was trained for three epochs on one GPU.",
]


def _rouge_direct(predictions, references, use_stemmer=False, tokenizer=None):
    """The independent value: rouge-score's RougeScorer.score per reference, best F-measure, mean x 100."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=use_stemmer, tokenizer=tokenizer)
    per_prediction = {key: [] for key in ROUGE_TYPES}
    for prediction, refs in zip(predictions, references):
        scores = [scorer.score(ref, prediction) for ref in ([refs] if isinstance(refs, str) else refs)]
        for key in ROUGE_TYPES:
            per_prediction[key].append(100 * max(score[key].fmeasure for score in scores))
    return {key: sum(values) / len(values) for key, values in per_prediction.items()}, per_prediction


@pytest.mark.parametrize("use_stemmer", [False, True])
@pytest.mark.parametrize(
    ("predictions", "references"),
    [(HYPS, REFS_A), (SUMMARIES, SUMMARY_REFS), (HYPS, [[r] for r in REFS_B])],
    ids=["sentences", "multi-line-summaries", "reference-lists"],
)
def test_rouge_matches_rouge_score(predictions, references, use_stemmer):
    result = compute("rouge", predictions=predictions, references=references, use_stemmer=use_stemmer)
    expected, _ = _rouge_direct(predictions, references, use_stemmer=use_stemmer)
    assert set(result) == set(ROUGE_TYPES)
    assert result == pytest.approx(expected)
    assert all(isinstance(v, float) and 0 < v < 100 for v in result.values())
    json.dumps(result)


def test_rouge_stemmer_and_line_splitting_change_the_scores():
    # Guards the comparisons above against settings that would not matter on these texts.
    plain = compute("rouge", predictions=SUMMARIES, references=SUMMARY_REFS)
    stemmed = compute("rouge", predictions=SUMMARIES, references=SUMMARY_REFS, use_stemmer=True)
    assert stemmed["rouge1"] > plain["rouge1"]  # "arrested"/"arrest", "released"/"release", "trained"/"training"
    # The first summary has its two sentences in the reference's opposite order: whole-text LCS loses one.
    assert plain["rougeLsum"] > plain["rougeL"]


def test_rouge_multi_reference_takes_the_best_reference_per_type():
    refs = [[a, b] for a, b in zip(REFS_A, REFS_B)]
    result = compute("rouge", predictions=HYPS, references=refs)
    expected, _ = _rouge_direct(HYPS, refs)
    assert result == pytest.approx(expected)
    only_a = compute("rouge", predictions=HYPS, references=REFS_A)
    only_b = compute("rouge", predictions=HYPS, references=REFS_B)
    for key in ROUGE_TYPES:
        assert result[key] >= max(only_a[key], only_b[key]) - 1e-9
    # A variable number of references per prediction.
    mixed = [[REFS_A[0], REFS_B[0]], [REFS_A[1]], [REFS_B[2]], [REFS_B[3], REFS_A[3]]]
    assert compute("rouge", predictions=HYPS, references=mixed) == pytest.approx(_rouge_direct(HYPS, mixed)[0])


def test_rouge_without_aggregator_returns_per_prediction_values():
    result = compute("rouge", predictions=SUMMARIES, references=SUMMARY_REFS, use_aggregator=False)
    _, expected = _rouge_direct(SUMMARIES, SUMMARY_REFS)
    assert set(result) == set(ROUGE_TYPES)
    for key in ROUGE_TYPES:
        assert result[key] == pytest.approx(expected[key]) and len(result[key]) == len(SUMMARIES)


def test_rouge_known_values_and_empty_prediction():
    # By hand: unigrams a b c d vs a b c e share 3 of 4 (P = R = F = 3/4); bigrams ab bc cd vs ab bc ce
    # share 2 of 3; the longest common subsequence is a b c (3 of 4).
    result = compute("rouge", predictions=["a b c d"], references=[["a b c e"]])
    assert result == pytest.approx({"rouge1": 75.0, "rouge2": 200 / 3, "rougeL": 75.0, "rougeLsum": 75.0})
    identical = compute("rouge", predictions=HYPS, references=HYPS)
    assert identical == pytest.approx(dict.fromkeys(ROUGE_TYPES, 100.0))
    # An empty prediction scores 0 and still counts in the mean.
    empty = compute("rouge", predictions=["", HYPS[0]], references=[REFS_A[0], HYPS[0]], use_aggregator=False)
    assert {key: values[0] for key, values in empty.items()} == dict.fromkeys(ROUGE_TYPES, 0.0)
    mean = compute("rouge", predictions=["", HYPS[0]], references=[REFS_A[0], HYPS[0]])
    assert mean == pytest.approx(dict.fromkeys(ROUGE_TYPES, 50.0))


def test_rouge_types_and_tokenizer():
    result = compute("rouge", predictions=HYPS, references=REFS_A, rouge_types=["rouge1", "rouge3"])
    assert set(result) == {"rouge1", "rouge3"}
    with pytest.raises(ValueError, match="rougeX"):
        compute("rouge", predictions=HYPS, references=REFS_A, rouge_types=["rougeX"])
    # The default tokenizer keeps ASCII letters and digits only: French accents split words apart.
    french, french_ref = ["Un garçon joue à côté de l'église."], ["Un garçon joue près de l'église."]
    default = compute("rouge", predictions=french, references=french_ref)
    split = compute("rouge", predictions=french, references=french_ref, tokenizer=str.split)

    class Split:
        def tokenize(self, text):
            return text.split()

    assert split == pytest.approx(_rouge_direct(french, french_ref, tokenizer=Split())[0])
    assert split["rouge1"] != pytest.approx(default["rouge1"])


def test_rouge_metric_info_text():
    metric = load("rouge", keep_in_memory=True)
    description, inputs = metric.description, metric.inputs_description
    assert "0-100" in description and "averaged over the predictions" in description and "highest F-measure" in description
    assert "line" in description and "rouge-score" in description and "ASCII" in description
    for name in ["rouge_types", "use_stemmer", "use_aggregator", "tokenizer", "newlines"]:
        assert name in inputs
    assert "Lin, Chin-Yew" in metric.citation and "W04-1013" in metric.citation


# --- end to end in a fresh process (slow: importing evaluate takes ~10 s) ------------------------


@pytest.mark.slow
def test_load_in_fresh_process_with_fresh_hf_home(tmp_path):
    code = textwrap.dedent(
        """
        import json, socket
        def blocked(*args, **kwargs):
            raise AssertionError("network used")
        socket.getaddrinfo = blocked
        from llmtune.metrics import SHIPPED, load
        out = {name: load(name).name for name in SHIPPED}
        out["acc"] = load("accuracy").compute(predictions=[1, 0], references=[1, 1])["accuracy"]
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_MODULES_CACHE", None)
    env.pop("HF_METRICS_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {**{name: name for name in SHIPPED}, "acc": 0.5}
    assert (tmp_path / "hf" / "modules" / "evaluate_modules" / "metrics" / "accuracy").is_dir()
