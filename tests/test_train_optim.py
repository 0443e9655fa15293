"""The trainer's optimizer schedule (``bnnhw.train.optim``)."""

import pytest
from bnnhw.train.optim import decayed_lr


def test_decayed_lr_is_geometric():
    assert decayed_lr(1e-2, 1e-4, 0, 3) == pytest.approx(1e-2)
    assert decayed_lr(1e-2, 1e-4, 1, 3) == pytest.approx(1e-3)
    assert decayed_lr(1e-2, 1e-4, 2, 3) == pytest.approx(1e-4)
    assert decayed_lr(1e-2, 1e-4, 0, 1) == 1e-2
