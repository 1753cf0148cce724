"""Metrics against hand-computed values.

ROUGE-L F = 2PR/(P+R) with P = LCS/|pred|, R = LCS/|ref| over rouge-score tokens
(lower-cased, non-alphanumerics split off, Porter-stemmed for MiniLLM's ROUGE-L).
"""
import pytest

from csd.metrics import (bleu, compute_metric, extract_gsm8k_answer, gsm8k_accuracy, numbers_match, rouge_l,
                         rouge_scores)


def test_rouge_l_hand_computed():
    # LCS("the cat sat on the mat", "the cat was on the mat") = 5 of 6 tokens each -> F = 5/6
    assert rouge_l(["the cat sat on the mat"], ["the cat was on the mat"])["rougeL"] == pytest.approx(500 / 6)
    # LCS = 2 ("a", "c"), |pred| = 3, |ref| = 4: P = 2/3, R = 1/2, F = 4/7
    assert rouge_l(["a b c"], ["a x c y"])["rougeL"] == pytest.approx(400 / 7)


def test_rouge_l_minillm_normalisation_and_stemming():
    # case and punctuation are ignored, "Cats"/"cat" and "running"/"runs" share a stem
    assert rouge_l(["Cats, RUNNING!"], ["cat runs"])["rougeL"] == pytest.approx(100.0)
    assert rouge_l(["Cats, RUNNING!"], ["cats running"])["exact_match"] == pytest.approx(100.0)


def test_rouge_l_max_over_references_and_mean():
    scores = rouge_l(["the cat sat on the mat", "dog"], [["a b", "the cat sat on the mat"], "cat"])
    assert scores["rougeL"] == pytest.approx((100.0 + 0.0) / 2)


def test_empty_generation_scores_zero():
    assert rouge_l([""], ["some reference"])["rougeL"] == 0.0
    assert rouge_scores([""], ["some reference"])["rouge1"] == 0.0
    assert bleu([""], ["some reference text here"])["bleu"] == 0.0
    assert gsm8k_accuracy([""], ["#### 5"])["accuracy"] == 0.0
    assert rouge_l([], [])["rougeL"] == 0.0


def test_rouge_1_2_hand_computed():
    scores = rouge_scores(["a b c d"], ["a b e f"])
    assert scores["rouge1"] == pytest.approx(50.0)                # 2 of 4 unigrams
    assert scores["rouge2"] == pytest.approx(100 / 3)             # 1 of 3 bigrams
    assert scores["rougeL"] == pytest.approx(50.0)
    # no stemming for DialogSum's rouge: "cats" != "cat"
    assert rouge_scores(["cats"], ["cat"])["rouge1"] == 0.0


def test_bleu_identical_is_100_and_sacrebleu_value():
    text = ["The quick brown fox jumps over the lazy dog .", "It is raining today in the city ."]
    assert bleu(text, text)["bleu"] == pytest.approx(100.0)
    # 4 unigram, 3 bigram, 2 trigram, 1 four-gram matches out of 6/5/4/3; no brevity penalty (6 vs 6)
    # BLEU = (4/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    value = bleu(["a b c d x y"], ["a b c d e f"])["bleu"]
    assert value == pytest.approx(100 * (4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel=1e-6)


@pytest.mark.parametrize("text,expected", [
    ("Natalia sold 24 clips.\n#### 72", 72.0),
    ("#### 72\nThen 9 more", 72.0),                 # first line after ####
    ("#### $1,234.50", 1234.5),
    ("The answer is 72.", 72.0),                    # no ####: last number
    ("I think 5, no wait, 7", 7.0),
    ("Total: 1,000 apples", 1000.0),
    ("It drops to -3 degrees", -3.0),
    ("no digits at all", None),
    ("####", None),                                 # #### with nothing after it
    ("", None),
])
def test_gsm8k_extraction(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_gsm8k_strict_needs_hash_marks():
    assert extract_gsm8k_answer("The answer is 72.", fallback_last_number=False) is None
    scores = gsm8k_accuracy(["so 18 dollars", "#### 3", "#### 69"], ["18", "#### 3", "70,000"])
    assert scores["accuracy"] == pytest.approx(200 / 3)           # 18 (fallback) and 3 correct
    assert scores["accuracy_strict"] == pytest.approx(100 / 3)    # only the #### answer counts


def test_gsm8k_number_equivalence():
    assert numbers_match(3.5, float("3.50"))
    assert numbers_match(0.5, 50.0)           # percentage rule of the authors' grader
    assert not numbers_match(0.5, 50.0, include_percentage=False)
    assert not numbers_match(72.2, 72.0)      # outside rel. tolerance 1e-3
    assert numbers_match(72.05, 72.0)         # inside it


def test_compute_metric_dispatch():
    examples = [{"references": ["the cat"], "response": "#### 4", "answer": "4"}]
    assert compute_metric("rougeL", ["the cat"], examples)["rougeL"] == pytest.approx(100.0)
    assert compute_metric("gsm8k_accuracy", ["#### 4"], examples)["accuracy"] == 100.0
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metric("meteor", ["x"], examples)
