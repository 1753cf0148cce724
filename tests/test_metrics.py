"""Metrics against hand-computed values.

ROUGE-L F = 2PR/(P+R) with P = LCS/|pred|, R = LCS/|ref| over rouge-score tokens
(lower-cased, non-alphanumerics split off, Porter-stemmed for MiniLLM's ROUGE-L).
"""
import math

import pytest

from csd.metrics import (bleu, compute_metric, extract_gsm8k_answer, gsm8k_accuracy, normalize_answer, numbers_match,
                         rouge_l, rouge_scores)


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
    assert extract_gsm8k_answer("The answer is 72.", strict=True) is None
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


# The authors' eval_gsm.py: answer = text.split('####')[1].split('\n')[0].strip(), then grader.py's
# math_equal(answer, reference, tolerance=1e-3): parse_digits drops every comma; 'a/b' is not a float,
# so it reaches the symbolic check, where 1/2 equals 0.5; anything else on the line makes it no number.
@pytest.mark.parametrize("text,expected", [
    ("#### 5\n#### 7", 5.0),                        # the FIRST '####', not the last
    ("#### 1/2", 0.5),                               # a fraction, not its numerator
    ("#### -3/4", -0.75),
    ("#### 3,4", 34.0),                              # commas are dropped, as parse_digits does
    ("#### 1,000", 1000.0),
    ("####   72  \nso 9", 72.0),                     # surrounding spaces do not matter
    ("#### \n72", None),                            # its first line is empty: wrong for the authors
    ("#### -3", -3.0),
    ("#### 3.50", 3.5),
    ("#### .5", 0.5),
    ("#### 72 dollars", None),                       # words on the line: not a number
    ("#### 1/0", None),
    ("The answer is 72.", None),                     # no '####': wrong
    ("#### 5 #### 7", 5.0),                          # split('####')[1]: the text between the first two marks
    ("#### 72\n9\n8", 72.0),                         # the first line, not all but the last
    ("#### $18", 18.0),                              # '$' and '%' ignored
    ("#### 50%", 50.0),
])
def test_gsm8k_strict_extraction_follows_the_authors_grader(text, expected):
    assert extract_gsm8k_answer(text, strict=True) == expected


def test_gsm8k_lenient_extraction_takes_the_first_number_on_the_answer_line():
    assert extract_gsm8k_answer("#### 72 dollars") == 72.0
    assert extract_gsm8k_answer("#### 5 then #### 7") == 5.0
    assert extract_gsm8k_answer("#### about 1/2 of it") == 0.5
    assert extract_gsm8k_answer("#### \n72") is None    # the line after '####' is still the one read


def test_gsm8k_accuracy_strict_and_lenient_by_hand():
    predictions = ["#### 5\n#### 7", "#### 1/2", "#### 3,4", "#### 18 dollars", "18", "#### -3"]
    references = ["5", "0.5", "34", "18", "18", "#### -3"]
    scores = gsm8k_accuracy(predictions, references)
    assert scores["accuracy_strict"] == pytest.approx(100 * 4 / 6)   # all but the words and the missing '####'
    assert scores["accuracy"] == pytest.approx(100.0)
    assert gsm8k_accuracy(["#### 7\n#### 5"], ["5"])["accuracy_strict"] == 0.0
    assert gsm8k_accuracy(["#### 1/2"], ["1"])["accuracy_strict"] == 0.0


def test_gsm8k_lenient_fallback_keeps_the_sign_before_a_currency_sign():
    assert extract_gsm8k_answer("He lost -$5 in total") == -5.0


def test_gsm8k_reference_solution_is_read_after_its_marks():
    # a full solution as reference: its answer is after '####', not its first number (48)
    assert gsm8k_accuracy(["#### 72"], ["She sold 48/2 = 24 clips.\n#### 72"])["accuracy_strict"] == 100.0


def test_gsm8k_percentage_rule_both_ways():
    assert numbers_match(5000.0, 50.0) and numbers_match(0.5, 50.0)
    assert not numbers_match(5050.0, 50.0) and not numbers_match(500.0, 50.0)


def test_normalize_answer_by_hand():
    assert normalize_answer("The  Cat, sat!") == "the cat sat"


def test_exact_match_and_rouge_are_means_over_examples():
    scores = rouge_l(["the cat", "a dog", "x"], ["The cat!", "a dog", "y"])
    assert scores["exact_match"] == pytest.approx(200 / 3) and scores["rougeL"] == pytest.approx(200 / 3)
    scores = rouge_scores(["a b", "c d", "e"], ["a b", "c d", "f"])
    assert all(scores[t] == pytest.approx(200 / 3) for t in ("rouge1", "rouge2", "rougeL", "rougeLsum"))


def test_empty_inputs_missing_predictions_and_references():
    assert rouge_l([], []) == {"rougeL": 0.0, "exact_match": 0.0}
    assert rouge_scores([], []) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0}
    assert bleu([], []) == {"bleu": 0.0}
    assert gsm8k_accuracy([], []) == {"accuracy": 0.0, "accuracy_strict": 0.0}
    assert rouge_l([None], ["xxxx"]) == {"rougeL": 0.0, "exact_match": 0.0}      # a missing prediction scores 0
    assert rouge_scores([None], ["xxxx"])["rouge1"] == 0.0
    # BLEU of a missing prediction: the other example alone is a perfect match, so only the brevity penalty remains
    assert bleu([None, "a b c d e"], ["XXXX", "a b c d e"])["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 5))
    assert rouge_l(["a"], [[]]) == {"rougeL": 0.0, "exact_match": 0.0}           # an example without references
    assert rouge_scores(["a"], [[]])["rougeL"] == 0.0


@pytest.mark.parametrize("metric", [rouge_l, rouge_scores, bleu, gsm8k_accuracy])
def test_length_mismatch_is_an_error_naming_both_counts(metric):
    with pytest.raises(ValueError, match=r"^2 predictions but 1 (references|answers)$"):
        metric(["a", "b"], ["a"])


def test_bleu_needs_the_same_number_of_references():
    with pytest.raises(ValueError, match="^sacreBLEU needs the same number of references for every example$"):
        bleu(["a", "b"], [["a"], ["b", "c"]])


def test_compute_metric_dispatches_every_metric():
    examples = [{"references": ["the cat sat here"], "response": "x\n#### 4"}, {"references": ["a b c d e"], "response": "#### 5", "answer": "6"}]
    predictions = ["the cat sat here", "a b c d e"]
    assert compute_metric("rouge", predictions, examples) == rouge_scores(predictions, [["the cat sat here"], ["a b c d e"]])
    assert compute_metric("rouge", predictions, examples)["rouge2"] == pytest.approx(100.0)
    assert compute_metric("bleu", predictions, examples)["bleu"] == pytest.approx(100.0)
    # the answer field when there is one, else the response's '####' answer
    assert compute_metric("gsm8k_accuracy", ["#### 4", "#### 6"], examples)["accuracy_strict"] == 100.0
    assert compute_metric("gsm8k_accuracy", ["#### 4", "#### 5"], examples)["accuracy_strict"] == 50.0
