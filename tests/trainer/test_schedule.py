"""LR schedule: warmup, constant, linear/cosine warmdown."""

import math

import pytest

from trainer.schedule import lr_multiplier


def test_warmup_constant_warmdown_linear():
    f = [lr_multiplier(s, steps=10, warmup_steps=2, warmdown_frac=0.4, decay="linear") for s in range(10)]
    assert f[:2] == [0.5, 1.0]
    assert f[2:6] == [1.0] * 4
    assert f[6:] == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_cosine_and_min_frac():
    f = [lr_multiplier(s, steps=8, warmup_steps=0, warmdown_frac=0.5, decay="cosine", min_frac=0.1)
         for s in range(8)]
    assert f[:4] == [1.0] * 4
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert f[4:] == pytest.approx(expected)
    assert all(a >= b for a, b in zip(f, f[1:]))


def test_no_warmdown_is_constant():
    assert {lr_multiplier(s, steps=5, warmup_steps=0, warmdown_frac=0.0) for s in range(5)} == {1.0}


def test_short_run_shares_itself_between_warmup_and_warmdown():
    from trainer.schedule import fit_phases
    assert fit_phases(200, 10, 0.2) == (10, 40)  # fits: unchanged
    assert fit_phases(20, 10, 0.6) == (9, 11)  # 10 + 12 asked: shared in proportion, warmup first
    assert fit_phases(5, 10, 0.2) == (3, 2)  # the README's --train.steps=5: both phases, the LR ends below its peak
    assert fit_phases(5, 10, 0.0) == (5, 0)  # no warmdown asked: the warmup takes the run
    assert fit_phases(10, 0, 0.1) == (0, 2)  # a 1-step warmdown would keep the peak LR
    assert fit_phases(1, 10, 0.2) == (0, 1)
    f = [lr_multiplier(s, steps=5, warmup_steps=10, warmdown_frac=0.2) for s in range(5)]
    assert f == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 0.5])
    f = [lr_multiplier(s, steps=20, warmup_steps=10, warmdown_frac=0.6) for s in range(20)]
    assert f[8] == 1.0 and f[9] == 1.0 and f[10] == pytest.approx(10 / 11) and f[19] == pytest.approx(1 / 11)
