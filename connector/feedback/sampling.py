"""Sampling strategies: which samples the ML Feedback connector uploads.

Labelling samples costs money, so a feedback configuration may keep only the samples most likely to improve the
model.  Where the connector's documentation and its original code disagree, the code wins, since that is what
deployed connectors did:

- LEAST_CONFIDENCE keeps a sample when its highest score is strictly below the threshold (the docs say ``<=``).
- MARGIN keeps a sample when ``top1 - top2`` is strictly below the threshold (the docs say ``<=``).  A
  prediction with a single class has no second score; it counts as 0, so the margin is the score itself (the
  original code failed with an IndexError there).
- ENTROPY keeps a sample when the natural-log Shannon entropy of the scores, normalised to sum 1, is strictly
  above the threshold.  Scores already within 1e-8 of summing to 1 are used as they are.  The docs call this
  "normalized entropy", but it is not divided by log(n): ``[.5, .25, .25]`` gives 1.03972.
- RANDOM_SAMPLING keeps a sample when ``random() < rate``; it ignores the prediction.

A ModelPrediction is a list of numbers or an object.  An object is read through its values, in the order they
were written (``{"cat": 0.7, "dog": 0.3}`` is ``[0.7, 0.3]``): the strategies only need the scores, not which
class has which.  Every score must be a finite number (booleans are not numbers); anything else raises
`InvalidPredictionError` saying which entry is wrong.  LEAST_CONFIDENCE and MARGIN accept any finite scores
(logits too); ENTROPY needs probabilities, so it refuses negative scores and scores summing to 0.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, ClassVar, Mapping, Optional

logger = logging.getLogger("ggic.feedback.sampling")

RANDOM_SAMPLING = "RANDOM_SAMPLING"
LEAST_CONFIDENCE = "LEAST_CONFIDENCE"
MARGIN = "MARGIN"
ENTROPY = "ENTROPY"
STRATEGY_NAMES = (RANDOM_SAMPLING, LEAST_CONFIDENCE, MARGIN, ENTROPY)

#: Scores whose sum is this close to 1 are taken as already normalised (the original code's tolerance).
NORMALISED_TOLERANCE = 1e-8


class SamplingError(ValueError):
    """Base class of the sampling errors."""


class InvalidSamplingStrategyError(SamplingError):
    """A sampling-strategy configuration that cannot be built (unknown name, missing or out-of-range value)."""


class InvalidPredictionError(SamplingError):
    """A ModelPrediction a strategy cannot read: not a list or object, empty, or a score that is not usable."""


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def prediction_scores(prediction: Any) -> list[float]:
    """The scores of a ModelPrediction: a list's items, or an object's values in order."""
    if isinstance(prediction, Mapping):
        items = [(f"key {key!r}", value) for key, value in prediction.items()]
    elif isinstance(prediction, (list, tuple)):
        items = [(f"index {index}", value) for index, value in enumerate(prediction)]
    else:
        raise InvalidPredictionError(
            f"ModelPrediction must be a list of numbers or an object of numbers, not {type(prediction).__name__}")
    if not items:
        raise InvalidPredictionError("ModelPrediction is empty: there is no score to sample on")
    scores = []
    for where, value in items:
        if not _is_number(value):
            raise InvalidPredictionError(
                f"ModelPrediction {where} is {value!r} ({type(value).__name__}), not a number")
        number = float(value)
        if not math.isfinite(number):
            raise InvalidPredictionError(f"ModelPrediction {where} is {value!r}, not a finite number")
        scores.append(number)
    return scores


def margin(prediction: Any) -> float:
    """Highest score minus the second highest; a single score's margin is the score itself."""
    top = heapq.nlargest(2, prediction_scores(prediction))
    return top[0] - (top[1] if len(top) > 1 else 0.0)


def entropy(prediction: Any) -> float:
    """Natural-log Shannon entropy of the scores normalised to sum 1 (as scipy.stats.entropy computes it)."""
    scores = prediction_scores(prediction)
    negative = [s for s in scores if s < 0]
    if negative:
        raise InvalidPredictionError(
            f"ModelPrediction has a negative score ({negative[0]!r}); entropy needs probabilities")
    try:
        total = math.fsum(scores)
    except OverflowError:
        total = math.inf
    if not math.isfinite(total):
        raise InvalidPredictionError("ModelPrediction scores are too large to sum; entropy needs probabilities")
    if total == 0:
        raise InvalidPredictionError("ModelPrediction scores sum to 0; entropy needs probabilities")
    if abs(1.0 - total) >= NORMALISED_TOLERANCE:
        scores = [s / total for s in scores]
    return -sum(p * math.log(p) for p in scores if p > 0)


class SamplingStrategy(ABC):
    """Decides whether one sample is uploaded."""

    name: ClassVar[str]
    reads_prediction: ClassVar[bool] = True

    @abstractmethod
    def should_use(self, prediction: Any, rng: Optional[random.Random] = None) -> bool:
        """True when the sample should be uploaded; `rng` only matters to RANDOM_SAMPLING."""

    def check_prediction(self, prediction: Any) -> None:
        """Raise InvalidPredictionError now if `should_use` could not read `prediction` later."""
        if self.reads_prediction:
            self.should_use(prediction)


@dataclass(frozen=True)
class RandomSampling(SamplingStrategy):
    """Keeps each sample with probability `rate`, whatever the prediction."""

    rate: float
    rng: Optional[random.Random] = field(default=None, compare=False, repr=False)
    name: ClassVar[str] = RANDOM_SAMPLING
    reads_prediction: ClassVar[bool] = False

    def should_use(self, prediction: Any, rng: Optional[random.Random] = None) -> bool:
        draw = (rng or self.rng or random).random()
        use = draw < self.rate
        logger.debug("RANDOM_SAMPLING: draw %r < rate %r is %s", draw, self.rate, use)
        return use


@dataclass(frozen=True)
class LeastConfidence(SamplingStrategy):
    """Keeps samples whose highest score is below the threshold: the model was unsure of every class."""

    threshold: float
    name: ClassVar[str] = LEAST_CONFIDENCE

    def should_use(self, prediction: Any, rng: Optional[random.Random] = None) -> bool:
        highest = max(prediction_scores(prediction))
        use = highest < self.threshold
        logger.debug("LEAST_CONFIDENCE: highest score %r < threshold %r is %s", highest, self.threshold, use)
        return use


@dataclass(frozen=True)
class Margin(SamplingStrategy):
    """Keeps samples whose two best classes are closer than the threshold: the model could not choose."""

    threshold: float
    name: ClassVar[str] = MARGIN

    def should_use(self, prediction: Any, rng: Optional[random.Random] = None) -> bool:
        value = margin(prediction)
        use = value < self.threshold
        logger.debug("MARGIN: margin %r < threshold %r is %s", value, self.threshold, use)
        return use


@dataclass(frozen=True)
class Entropy(SamplingStrategy):
    """Keeps samples whose score distribution is flatter (higher entropy) than the threshold."""

    threshold: float
    name: ClassVar[str] = ENTROPY

    def should_use(self, prediction: Any, rng: Optional[random.Random] = None) -> bool:
        value = entropy(prediction)
        use = value > self.threshold
        logger.debug("ENTROPY: entropy %r > threshold %r is %s", value, self.threshold, use)
        return use


def _number(config: Mapping[str, Any], name: str, field_name: str, in_range, rule: str) -> float:
    if field_name not in config:
        raise InvalidSamplingStrategyError(f"Sampling strategy {name} needs {field_name!r}")
    value = config[field_name]
    if not _is_number(value) or not math.isfinite(value):
        raise InvalidSamplingStrategyError(
            f"Sampling strategy {name}: {field_name} must be a finite number, not {value!r}")
    if not in_range(value):
        raise InvalidSamplingStrategyError(f"Sampling strategy {name}: {field_name} {value!r} {rule}")
    return float(value)


def _fraction(value: float) -> bool:
    return 0 <= value <= 1


def sampling_strategy(config: Mapping[str, Any], rng: Optional[random.Random] = None) -> SamplingStrategy:
    """Build a strategy from a ``sampling-strategy`` object (``strategy-name`` plus ``rate`` or ``threshold``).

    Stricter than the original factory: unknown fields, and a rate or threshold the named strategy does not use,
    are errors, as in the configuration schema.  Raises InvalidSamplingStrategyError.
    """
    if not isinstance(config, Mapping):
        raise InvalidSamplingStrategyError(
            f"A sampling strategy must be an object, not {type(config).__name__}")
    name = config.get("strategy-name")
    if name not in STRATEGY_NAMES:
        raise InvalidSamplingStrategyError(
            f"Unknown sampling strategy {name!r}; strategy-name must be one of {', '.join(STRATEGY_NAMES)}")
    wanted = "rate" if name == RANDOM_SAMPLING else "threshold"
    extra = sorted(set(config) - {"strategy-name", wanted})
    if extra:
        raise InvalidSamplingStrategyError(
            f"Sampling strategy {name} takes strategy-name and {wanted} only; not {', '.join(extra)}")
    between = "must be between 0 and 1"
    if name == RANDOM_SAMPLING:
        return RandomSampling(_number(config, name, "rate", _fraction, between), rng=rng)
    if name == LEAST_CONFIDENCE:
        return LeastConfidence(_number(config, name, "threshold", _fraction, between))
    if name == MARGIN:
        return Margin(_number(config, name, "threshold", _fraction, between))
    # The original code rejects 0 (a falsy threshold) although the documentation allows it.
    return Entropy(_number(config, name, "threshold", lambda v: v > 0, "must be greater than 0"))
