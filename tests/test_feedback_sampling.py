"""Tests of the ML Feedback sampling strategies (connector.feedback.sampling): the original code's semantics."""

import math
import random

import pytest

from connector.feedback import sampling as S


def build(name, **values):
    return S.sampling_strategy({"strategy-name": name, **values})


# --- LEAST_CONFIDENCE -------------------------------------------------------------------------------------------

def test_least_confidence_documented_example_and_strict_boundary():
    strategy = build("LEAST_CONFIDENCE", threshold=0.6)
    assert isinstance(strategy, S.LeastConfidence)
    assert strategy.should_use([0.2, 0.2, 0.4, 0.2]) is True  # max .4 < .6
    assert strategy.should_use([0.1, 0.9]) is False
    # The documentation says <=; the code uses <, so a top score equal to the threshold is not used.
    assert strategy.should_use([0.6, 0.4]) is False
    assert strategy.should_use([0.5999999, 0.4]) is True


def test_least_confidence_reads_a_dict_prediction_through_its_values():
    strategy = build("LEAST_CONFIDENCE", threshold=0.5)
    assert strategy.should_use({"cat": 0.45, "dog": 0.3, "bird": 0.25}) is True
    assert strategy.should_use({"cat": 0.7, "dog": 0.3}) is False


# --- MARGIN -----------------------------------------------------------------------------------------------------

def test_margin_documented_example_and_strict_boundary():
    strategy = build("MARGIN", threshold=0.02)
    assert strategy.should_use([0.3, 0.35, 0.34, 0.01]) is True  # .35 - .34 = .01 < .02
    assert strategy.should_use([0.1, 0.8, 0.1]) is False
    exact = build("MARGIN", threshold=0.25)
    assert exact.should_use([0.5, 0.25, 0.25]) is False  # margin exactly .25: not < .25
    assert exact.should_use([0.5, 0.2500001, 0.2499999]) is True


def test_margin_uses_the_two_highest_scores_in_any_order():
    assert S.margin([0.1, 0.4, 0.05, 0.45]) == pytest.approx(0.05)
    assert S.margin({"a": 0.2, "b": 0.2, "c": 0.6}) == pytest.approx(0.4)
    assert S.margin([0.5, 0.5]) == 0.0


def test_margin_of_a_single_class_is_its_score():
    assert S.margin([0.7]) == pytest.approx(0.7)
    assert build("MARGIN", threshold=0.8).should_use([0.7]) is True
    assert build("MARGIN", threshold=0.7).should_use([0.7]) is False


# --- ENTROPY ----------------------------------------------------------------------------------------------------

def test_entropy_documented_example():
    assert S.entropy([0.5, 0.25, 0.25]) == pytest.approx(1.03972, abs=1e-5)
    strategy = build("ENTROPY", threshold=0.75)
    assert strategy.should_use([0.5, 0.25, 0.25]) is True


def test_entropy_of_a_four_class_prediction_matching_the_example():
    # A zero-probability class adds nothing, so this 4-class prediction has the documented entropy too.
    prediction = [0.5, 0.25, 0.0, 0.25]
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert S.entropy(prediction) == pytest.approx(expected) == pytest.approx(1.03972, abs=1e-5)
    assert build("ENTROPY", threshold=1.03).should_use(prediction) is True
    assert build("ENTROPY", threshold=1.04).should_use(prediction) is False


def test_entropy_is_natural_log_and_not_divided_by_log_n():
    assert S.entropy([0.25] * 4) == pytest.approx(math.log(4))  # 1.386..., not 1.0
    assert S.entropy([1.0, 0.0, 0.0]) == 0.0


def test_entropy_normalises_unnormalised_scores():
    assert S.entropy([2, 1, 1]) == pytest.approx(S.entropy([0.5, 0.25, 0.25]))
    assert S.entropy({"a": 10, "b": 10}) == pytest.approx(math.log(2))
    assert build("ENTROPY", threshold=1.0).should_use([50, 25, 25]) is True


def test_entropy_uses_scores_within_tolerance_of_one_as_they_are():
    almost = [0.5, 0.25, 0.25 - 5e-9]
    plain = -sum(p * math.log(p) for p in almost)
    assert S.entropy(almost) == plain


def test_entropy_strictly_greater_than_threshold():
    value = S.entropy([0.5, 0.25, 0.25])
    assert build("ENTROPY", threshold=value).should_use([0.5, 0.25, 0.25]) is False


@pytest.mark.parametrize("prediction, words", [
    ([0.5, -0.1, 0.6], "negative score"),
    ([-1, -1], "negative score"),
    ([0, 0, 0], "sum to 0"),
    ([1e308, 1e308], "too large"),
])
def test_entropy_refuses_what_is_not_a_distribution(prediction, words):
    with pytest.raises(S.InvalidPredictionError, match=words):
        S.entropy(prediction)


# --- invalid predictions ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction, words", [
    ([], "empty"),
    ({}, "empty"),
    ("0.5,0.5", "not str"),
    (0.5, "not float"),
    (None, "not NoneType"),
    ([0.5, "0.5"], "index 1 is '0.5' \\(str\\), not a number"),
    ([0.5, True], "index 1 is True \\(bool\\), not a number"),
    ([0.5, None], "index 1 is None"),
    ({"cat": 0.5, "dog": [0.5]}, "key 'dog' is \\[0.5\\] \\(list\\), not a number"),
    ([0.5, float("nan")], "index 1 is nan, not a finite number"),
    ([float("inf")], "index 0 is inf, not a finite number"),
])
@pytest.mark.parametrize("name", ["LEAST_CONFIDENCE", "MARGIN", "ENTROPY"])
def test_strategies_that_read_the_prediction_refuse_unreadable_ones(name, prediction, words):
    strategy = build(name, threshold=0.5)
    with pytest.raises(S.InvalidPredictionError, match=words):
        strategy.should_use(prediction)
    with pytest.raises(S.InvalidPredictionError):
        strategy.check_prediction(prediction)


def test_random_sampling_ignores_the_prediction():
    strategy = build("RANDOM_SAMPLING", rate=1)
    strategy.check_prediction("anything")
    assert strategy.should_use("anything") is True


# --- RANDOM_SAMPLING --------------------------------------------------------------------------------------------

def test_random_sampling_rate_zero_never_and_one_always():
    rng = random.Random(7)
    never, always = build("RANDOM_SAMPLING", rate=0), build("RANDOM_SAMPLING", rate=1.0)
    assert not any(never.should_use([0.5], rng) for _ in range(10_000))
    assert all(always.should_use([0.5], rng) for _ in range(10_000))


def test_random_sampling_rate_is_the_share_of_samples_kept():
    rng = random.Random(20190711)
    strategy = build("RANDOM_SAMPLING", rate=0.3)
    kept = sum(strategy.should_use([0.5], rng) for _ in range(10_000))
    # Binomial(10000, 0.3): standard deviation ~46, so +-300 is more than 6 sigma.
    assert 2700 <= kept <= 3300


def test_random_sampling_uses_its_own_rng_and_is_reproducible():
    first = S.sampling_strategy({"strategy-name": "RANDOM_SAMPLING", "rate": 0.5}, rng=random.Random(3))
    second = S.sampling_strategy({"strategy-name": "RANDOM_SAMPLING", "rate": 0.5}, rng=random.Random(3))
    assert [first.should_use([]) for _ in range(50)] == [second.should_use([]) for _ in range(50)]
    # random() < rate: each draw decides, and an rng passed to should_use wins over the strategy's own.
    draws = random.Random(11)
    expected = [draws.random() < 0.5 for _ in range(20)]
    passed = random.Random(11)
    assert [first.should_use([], passed) for _ in range(20)] == expected
    assert True in expected and False in expected


# --- building strategies ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, words", [
    ({"strategy-name": "TIME_BASED", "rate": 0.5}, "Unknown sampling strategy 'TIME_BASED'.*RANDOM_SAMPLING"),
    ({"strategy-name": "random_sampling", "rate": 0.5}, "Unknown sampling strategy"),
    ({"rate": 0.5}, "Unknown sampling strategy None"),
    ({"strategy-name": "RANDOM_SAMPLING"}, "needs 'rate'"),
    ({"strategy-name": "RANDOM_SAMPLING", "rate": 1.5}, "rate 1.5 must be between 0 and 1"),
    ({"strategy-name": "RANDOM_SAMPLING", "rate": -0.1}, "rate -0.1 must be between 0 and 1"),
    ({"strategy-name": "RANDOM_SAMPLING", "rate": "0.5"}, "rate must be a finite number, not '0.5'"),
    ({"strategy-name": "RANDOM_SAMPLING", "rate": True}, "rate must be a finite number, not True"),
    ({"strategy-name": "LEAST_CONFIDENCE"}, "needs 'threshold'"),
    ({"strategy-name": "LEAST_CONFIDENCE", "threshold": 1.01}, "between 0 and 1"),
    ({"strategy-name": "MARGIN", "threshold": -0.5}, "between 0 and 1"),
    ({"strategy-name": "MARGIN", "rate": 0.5}, "threshold only; not rate"),
    ({"strategy-name": "ENTROPY", "threshold": 0}, "threshold 0 must be greater than 0"),
    ({"strategy-name": "ENTROPY", "threshold": float("nan")}, "finite number"),
    ({"strategy-name": "ENTROPY", "threshold": 1, "extra": 1}, "not extra"),
    (["RANDOM_SAMPLING"], "must be an object, not list"),
])
def test_invalid_strategy_configurations(config, words):
    with pytest.raises(S.InvalidSamplingStrategyError, match=words):
        S.sampling_strategy(config)


def test_valid_strategy_configurations():
    assert S.sampling_strategy({"strategy-name": "ENTROPY", "threshold": 2}) == S.Entropy(2.0)
    assert S.sampling_strategy({"strategy-name": "ENTROPY", "threshold": 50}).threshold == 50  # no upper bound
    assert S.sampling_strategy({"strategy-name": "MARGIN", "threshold": 0}) == S.Margin(0.0)
    assert S.sampling_strategy({"strategy-name": "LEAST_CONFIDENCE", "threshold": 1}) == S.LeastConfidence(1.0)
    assert S.sampling_strategy({"strategy-name": "RANDOM_SAMPLING", "rate": 0}).rate == 0.0
    assert issubclass(S.InvalidSamplingStrategyError, ValueError) and issubclass(S.InvalidPredictionError, ValueError)


def test_margin_zero_and_least_confidence_zero_never_use_a_sample():
    assert build("MARGIN", threshold=0).should_use([0.5, 0.5]) is False
    assert build("LEAST_CONFIDENCE", threshold=0).should_use([0.0, 0.0]) is False
