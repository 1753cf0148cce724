"""Evaluation metrics of the paper, each matching the authors' evaluation code.

rougeL (instruction following, Tables 1, 2, 5): MiniLLM's rouge_metric.py —
    RougeScorer(['rougeL'], use_stemmer=True).score(target=ref, prediction=pred).fmeasure,
    max over the example's references, mean over examples, x100. rouge-score's tokenizer
    itself lower-cases and replaces every non [a-z0-9] character by a space, so punctuation
    and case do not count. (MiniLLM's SQuAD-style normalize_answer is used only for its
    exact-match number, reported here as `exact_match`.)
rouge (DialogSum, Table 3): `evaluate.load('rouge')` = rouge-score rouge1/2/L/Lsum without
    stemming; we report the plain mean F1 x100 (evaluate's bootstrap 'mid' is within
    sampling noise of it).
bleu (Assamese->English, Table 3): sacreBLEU corpus BLEU, default 13a tokenisation.
gsm8k_accuracy (Table 3): `accuracy_strict` is the authors' eval_gsm.py: the first line after
    the FIRST '####', stripped, read as one number (commas dropped as grader.py's parse_digits
    does, so '3,4' is 34; 'a/b' is the fraction, which grader.py's symbolic check equates with
    its value; '$' and '%' ignored); no '####', an empty line or words on it -> wrong.
    `accuracy` is lenient: the first number on that line, else the last number in the text.
    Correct when equal to the reference within relative tolerance 1e-3, also accepting
    reference x100 and /100 (the percentage rule of grader.py).
An empty prediction scores 0 everywhere; nothing here raises on it.

Diversity of a set of responses (the CPU frontier, scripts/cpu_frontier.py), on lower-cased whitespace tokens:
distinct_n (Li et al., 2016) #unique n-grams / #n-grams pooled over the texts; self_bleu (Zhu et al., 2018, Texygen)
the mean over texts of sentence BLEU-4 of one text against all the others (sacreBLEU, exp smoothing; lower = more
diverse); mean_words the mean number of words.
"""
from __future__ import annotations

import functools
import math
import re
import string
from typing import Sequence

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_ANSWER = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))(?:\s*/\s*(\d+(?:\.\d*)?))?")  # a number or a/b


# ---------------------------------------------------------------- ROUGE-L (MiniLLM)
@functools.lru_cache(maxsize=4)
def _rouge_scorer(types: tuple[str, ...], use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, collapse whitespace (MiniLLM keeps articles)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(text.split())


def _as_reference_lists(references: Sequence) -> list[list[str]]:
    return [list(r) if isinstance(r, (list, tuple)) else [r] for r in references]


def rouge_l(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """MiniLLM ROUGE-L and exact match, both x100. references[i]: str or list of str."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {"rougeL": 0.0, "exact_match": 0.0}
    scorer = _rouge_scorer(("rougeL",), use_stemmer=True)
    rouge_total, exact_total = 0.0, 0.0
    for prediction, golds in zip(predictions, _as_reference_lists(references)):
        prediction = prediction or ""
        rouge_total += max((scorer.score(target=g, prediction=prediction)["rougeL"].fmeasure for g in golds),
                           default=0.0)
        exact_total += max((float(normalize_answer(prediction) == normalize_answer(g)) for g in golds),
                           default=0.0)
    n = len(predictions)
    return {"rougeL": 100.0 * rouge_total / n, "exact_match": 100.0 * exact_total / n}


def rouge_scores(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F1 x100 (no stemming, as `evaluate`'s rouge), max over references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    types = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    if not predictions:
        return {t: 0.0 for t in types}
    scorer = _rouge_scorer(types, use_stemmer=False)
    totals = dict.fromkeys(types, 0.0)
    for prediction, golds in zip(predictions, _as_reference_lists(references)):
        scores = [scorer.score(target=g, prediction=prediction or "") for g in golds]
        for t in types:
            totals[t] += max((s[t].fmeasure for s in scores), default=0.0)
    return {t: 100.0 * totals[t] / len(predictions) for t in types}


# ---------------------------------------------------------------- BLEU / COMET
def bleu(predictions: Sequence[str], references: Sequence) -> dict[str, float]:
    """sacreBLEU corpus BLEU (0-100). Every example needs the same number of references."""
    import sacrebleu

    refs = _as_reference_lists(references)
    if len(predictions) != len(refs):
        raise ValueError(f"{len(predictions)} predictions but {len(refs)} references")
    if not predictions:
        return {"bleu": 0.0}
    counts = {len(r) for r in refs}
    if len(counts) != 1:
        raise ValueError("sacreBLEU needs the same number of references for every example")
    streams = [[r[k] for r in refs] for k in range(counts.pop())]  # one stream per reference slot
    result = sacrebleu.corpus_bleu([p or "" for p in predictions], streams)
    return {"bleu": float(result.score)}


def comet(sources: Sequence[str], predictions: Sequence[str], references: Sequence[str],
          model_name: str = "Unbabel/wmt22-comet-da", batch_size: int = 8, gpus: int = 1) -> dict[str, float]:
    """COMET system score (optional extra; needs `pip install unbabel-comet` and the model)."""
    try:
        from comet import download_model, load_from_checkpoint
    except ImportError as err:
        raise ImportError("COMET needs `pip install unbabel-comet` (and network to fetch "
                          f"{model_name} once)") from err
    model = load_from_checkpoint(download_model(model_name))
    data = [{"src": s, "mt": p or "", "ref": r} for s, p, r in zip(sources, predictions, references)]
    return {"comet": float(model.predict(data, batch_size=batch_size, gpus=gpus).system_score)}


# ---------------------------------------------------------------- GSM8K
def _to_number(text: str, whole: bool = False) -> float | None:
    """The first number (or a/b fraction) in ``text``; with ``whole``, only if it is all of the text."""
    text = text.replace("$", "").replace("%", "").replace(",", "").strip()
    match = _ANSWER.fullmatch(text) if whole else _ANSWER.search(text)
    if not match:
        return None
    numerator, denominator = match.groups()
    if denominator is None:
        return float(numerator)
    return float(numerator) / float(denominator) if float(denominator) else None


def extract_gsm8k_answer(text: str, strict: bool = False) -> float | None:
    """The answer on the first line after the first '####' (strict: that line must be one number);
    without '####', the last number in the text unless strict. None when there is none."""
    text = text or ""
    if "####" in text:
        return _to_number(text.split("####")[1].split("\n")[0], whole=strict)  # eval_gsm.py, character for character
    if strict:
        return None
    numbers = _NUMBER.findall(text.replace("$", ""))
    return _to_number(numbers[-1]) if numbers else None


def numbers_match(predicted: float | None, reference: float | None, tolerance: float = 1e-3,
                  include_percentage: bool = True) -> bool:
    if predicted is None or reference is None:
        return False
    candidates = [reference / 100, reference, reference * 100] if include_percentage else [reference]
    return any(math.isclose(c, predicted, rel_tol=tolerance) for c in candidates)


def gsm8k_accuracy(predictions: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """answers: reference final answers (the text after '####', or full solutions)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    if not predictions:
        return {"accuracy": 0.0, "accuracy_strict": 0.0}
    loose = strict = 0
    for prediction, answer in zip(predictions, answers):
        reference = extract_gsm8k_answer(answer) if "####" in answer else _to_number(answer)
        loose += numbers_match(extract_gsm8k_answer(prediction), reference)
        strict += numbers_match(extract_gsm8k_answer(prediction, strict=True), reference)
    n = len(predictions)
    return {"accuracy": 100.0 * loose / n, "accuracy_strict": 100.0 * strict / n}


# ---------------------------------------------------------------- diversity
def _words(text: str) -> list[str]:
    return text.lower().split()


def distinct_n(texts: Sequence[str], n: int) -> float:
    """#unique n-grams / #n-grams, pooled over all texts. A text shorter than n adds no n-grams; none at all -> 0.0."""
    grams = []
    for text in texts:
        tokens = _words(text)
        grams.extend(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(texts: Sequence[str]) -> float:
    """Mean sentence BLEU-4 (x100) of each text against all the other texts as references; 0.0 for fewer than two."""
    import sacrebleu

    texts = [" ".join(_words(t)) for t in texts]
    if len(texts) < 2:
        return 0.0
    scores = [sacrebleu.sentence_bleu(text, texts[:i] + texts[i + 1:], tokenize="none").score
              for i, text in enumerate(texts)]
    return sum(scores) / len(scores)


def mean_words(texts: Sequence[str]) -> float:
    return sum(len(_words(t)) for t in texts) / len(texts) if texts else 0.0


def diversity(texts: Sequence[str]) -> dict[str, float]:
    """distinct-1/2 (fractions), self-BLEU (x100) and mean length in words of a set of responses."""
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2), "self_bleu": self_bleu(texts),
            "mean_words": mean_words(texts)}


# ---------------------------------------------------------------- dispatch
def compute_metric(name: str, predictions: Sequence[str], examples: Sequence[dict]) -> dict[str, float]:
    """Metric `name` (as in a data config) on predictions for `examples` (load_examples dicts)."""
    if name == "rougeL":
        return rouge_l(predictions, [ex["references"] for ex in examples])
    if name == "rouge":
        return rouge_scores(predictions, [ex["references"] for ex in examples])
    if name == "bleu":
        return bleu(predictions, [ex["references"] for ex in examples])
    if name == "gsm8k_accuracy":
        return gsm8k_accuracy(predictions, [ex.get("answer") or ex["response"] for ex in examples])
    raise ValueError(f"unknown metric {name!r} (rougeL | rouge | bleu | gsm8k_accuracy)")


METRICS = ("rougeL", "rouge", "bleu", "gsm8k_accuracy")
