import optuna
import pytest
from pydantic import ValidationError

from loopline.training.search import FloatRange, SearchSpace

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": {"low": 0.1, "high": 0.1}}, "empty or invalid range"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"models": []}, "at least 1 item"),
        ({"models": ["vgg99"]}, "unknown models \\['vgg99'\\]; valid: small_cnn"),
        ({"optimizers": ["adam"]}, "unknown optimizers \\['adam'\\]; valid: adamw, sgd"),
    ],
)
def test_bad_search_spaces_are_explained(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError, match=message):
        SearchSpace(**kwargs)


def test_a_trial_samples_inside_the_space() -> None:
    space = SearchSpace(lr=FloatRange(low=1e-3, high=1e-2, log=True), batch_sizes=[16])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = space.sample(study.ask())
        assert 1e-3 <= params["lr"] <= 1e-2 and params["batch_size"] == 16
        assert params["model"] == "small_cnn" and params["optimizer"] in {"adamw", "sgd"}
