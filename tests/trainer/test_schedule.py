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


def reference_lr(it: int, num_iterations: int = 5100, warmup_iters: int = 0, warmdown_iters: int = 1450) -> float:
    """Our transcription of the reference scripts' trapezoid (modded-nanogpt's 5100-step Muon runs, the Scion and
    Clipped Scion NanoGPT code): LambdaLR multiplier at iteration ``it``."""
    if it < warmup_iters:
        return (it + 1) / warmup_iters
    if it < num_iterations - warmdown_iters:
        return 1.0
    return (num_iterations - it) / warmdown_iters


def test_warmdown_in_steps_is_the_reference_schedule():
    ours = [lr_multiplier(s, steps=5100, warmup_steps=0, warmdown_frac=0.0, warmdown_steps=1450) for s in range(5100)]
    assert ours == [reference_lr(s) for s in range(5100)]  # exactly, step by step
    by_frac = [lr_multiplier(s, steps=5100, warmup_steps=0, warmdown_frac=0.285) for s in range(5100)]
    m = round(0.285 * 5100)  # 1453 (0.285 * 5100 is 1453.4999... in binary): not the reference's 1450
    assert m == 1453 and by_frac.index(next(v for v in by_frac if v < 1)) == 5100 - m + 1
    # with a warmup, as the reference's (it + 1) / warmup_iters
    ours = [lr_multiplier(s, steps=100, warmup_steps=10, warmdown_frac=0.0, warmdown_steps=30) for s in range(100)]
    assert ours == pytest.approx([reference_lr(s, 100, 10, 30) for s in range(100)], rel=0, abs=1e-15)


def test_warmdown_steps_fit_a_short_run_and_refuse_a_fraction_beside_them():
    from trainer.schedule import fit_phases
    assert fit_phases(100, 0, 0.0, 1450) == (0, 100)  # longer than the run: the whole run warms down
    assert fit_phases(20, 10, 0.0, 30) == fit_phases(20, 10, 1.0) == (7, 13)  # shared as a fraction's steps are
    assert fit_phases(10, 0, 0.0, 1) == (0, 2)  # a 1-step warmdown keeps the peak LR
    assert fit_phases(10, 0, 0.0, 0) == (0, 0)
    with pytest.raises(ValueError, match=r"train\.warmdown_steps.*train\.warmdown_frac"):
        fit_phases(10, 0, 0.2, 3)


def test_config_warmdown_steps_and_fraction_are_exclusive():
    from pathlib import Path

    from configs.base import ConfigError
    from configs.schema import load_config
    recipes = Path(__file__).resolve().parents[2] / "configs" / "recipes"
    for name in ("unconstrained-clipped-scion-124m.toml", "clipped-scion-124m.toml", "unconstrained-scion-124m.toml",
                 "unconstrained-clipped-scion-1b.toml", "muon-124m.toml"):
        cfg = load_config(["--config", str(recipes / name)])
        assert (cfg.train.steps, cfg.train.warmdown_steps, cfg.train.warmdown_frac) == (5100, 1450, 0.0), name
        assert cfg.train.fit(world_size=8) == []  # fits as asked, no warning
    with pytest.raises(ConfigError, match=r"train\.warmdown_steps \(1450\) and train\.warmdown_frac \(0\.2\)"):
        load_config(["--config", str(recipes / "clipped-scion-124m.toml"), "--train.warmdown_frac=0.2"])
    cfg = load_config(["--config", str(recipes / "clipped-scion-124m.toml"), "--train.warmdown_frac=0.2",
                       "--train.warmdown_steps=none"])
    assert cfg.train.warmdown_steps is None and cfg.train.warmdown_frac == 0.2
