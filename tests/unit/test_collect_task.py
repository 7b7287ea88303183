"""The collect flow's parameters refuse split fractions that leave train empty."""

import pytest
from pydantic import ValidationError

from tasks.collect import CollectParameters

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (0.6, 0.45), (0.3, 0.7)])
def test_fractions_that_leave_no_training_data_are_refused(val: float, test: float) -> None:
    with pytest.raises(ValidationError, match=r"val \+ test < 1.*To fix this"):
        CollectParameters(source="/images", val_fraction=val, test_fraction=test)


def test_usual_fractions_are_accepted() -> None:
    params = CollectParameters(source="/images", val_fraction=0.2, test_fraction=0.2)
    assert (params.val_fraction, params.test_fraction) == (0.2, 0.2)
