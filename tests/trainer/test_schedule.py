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
