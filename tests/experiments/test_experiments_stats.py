"""Report math: debiased EMA smoothing, steps to a target loss, the per-run summary row."""
from __future__ import annotations

import math

import pytest

from experiments.runfiles import Run, read_records
from experiments.stats import default_target, ema, mean_std, steps_to_target, summarize
from tests.experiments.fake_runs import write_run


def test_ema_is_debiased_so_a_constant_stays_constant():
    assert ema([3.0] * 50, 0.9) == pytest.approx([3.0] * 50, rel=1e-12)


def test_ema_matches_the_recursion_by_hand():
    beta, xs = 0.5, [4.0, 0.0, 2.0]
    m1 = 0.5 * 4.0                   # m_t = beta m_{t-1} + (1 - beta) x_t
    m2 = 0.5 * m1 + 0.5 * 0.0
    m3 = 0.5 * m2 + 0.5 * 2.0
    expected = [m1 / (1 - 0.5), m2 / (1 - 0.25), m3 / (1 - 0.125)]
    assert ema(xs, beta) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx([4.0, 4.0 / 3.0, 12.0 / 7.0])


def test_ema_without_smoothing_is_the_identity_and_lags_a_step_with_smoothing():
    xs = [1.0] * 5 + [0.0] * 5
    assert ema(xs, 0.0) == xs
    smooth = ema(xs, 0.8)
    assert all(a >= b - 1e-12 for a, b in zip(smooth, smooth[1:]))  # monotone response to a step down
    assert 0.0 < smooth[-1] < 1.0 and smooth[5] > 0.5


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5])
def test_ema_rejects_factors_outside_zero_one(beta):
    with pytest.raises(ValueError, match="smoothing factor"):
        ema([1.0], beta)


def test_steps_to_target_is_the_first_step_at_or_below_the_target():
    steps, values = [10, 20, 30, 40], [5.0, 4.0, 3.0, 2.5]
    assert steps_to_target(steps, values, 4.0) == 20
    assert steps_to_target(steps, values, 3.5) == 30
    assert steps_to_target(steps, values, 6.0) == 10
    assert steps_to_target(steps, values, 1.0) is None


def test_steps_to_target_counts_the_first_crossing_even_if_the_loss_goes_back_up():
    assert steps_to_target([1, 2, 3], [3.0, 1.0, 4.0], 2.0) == 2


def test_default_target_is_the_worst_final_val_loss(tmp_path):
    fast = Run.load(write_run(tmp_path / "fast", losses=[10.0, 5.0, 2.0, 1.0], val_every=2))
    slow = Run.load(write_run(tmp_path / "slow", losses=[10.0, 8.0, 6.0, 4.0], val_every=2))
    target = default_target([fast, slow], 0.0)
    assert target == 4.1  # val = train + 0.1 at steps 2 and 4
    assert (summarize(slow, 0.0, target).steps_to_target_val, summarize(slow, 0.0, target).steps_to_target) == (4, 4)
    assert (summarize(fast, 0.0, target).steps_to_target_val, summarize(fast, 0.0, target).steps_to_target) == (4, 3)


def test_default_target_without_val_is_the_worst_final_smoothed_train_loss(tmp_path):
    runs = [Run.load(write_run(tmp_path / name, losses=losses, val_every=100)) for name, losses in
            (("a", [10.0, 5.0]), ("b", [10.0, 7.0]))]
    for run in runs:
        for record in run.records:
            record.pop("val_loss", None)
    assert default_target(runs, 0.0) == 7.0


def test_summary_row_of_a_run(tmp_path):
    run = Run.load(write_run(tmp_path / "r", steps=10, losses=[9, 8, 7, 6, 5, 6, 7, 8, 9, 9.5]))
    row = summarize(run, 0.0, 7.0)
    assert row.steps_done == 10 and row.steps_planned == 10
    assert row.final_val == pytest.approx(9.6) and row.best_val == pytest.approx(5.1) and row.best_val_step == 5
    assert row.final_train_smoothed == 9.5
    assert row.steps_to_target == 3 and row.steps_to_target_val == 5  # val 5.1 at step 5 (<= 7)
    assert row.step_time_ms == pytest.approx(200.0)  # median of 0.1*(1 + step%3) s over steps 1..10
    assert row.skipped_steps == 1 and row.tokens_per_s == 1000.0


def test_mean_std_ignores_missing_values():
    assert mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert mean_std([2.0]) == (2.0, None)
    assert mean_std([None, float("nan")]) == (None, None)


def test_read_records_keeps_the_last_record_of_a_step_and_ignores_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train_loss": 5}\n{"step": 2, "train_loss": 4}\n{"step": 2, "train_loss": 3}\n'
                    '{"step": 3, "train_lo')
    assert read_records(path) == [{"step": 1, "train_loss": 5}, {"step": 2, "train_loss": 3}]


def test_series_skips_missing_and_non_finite_values(tmp_path):
    run = Run.load(write_run(tmp_path / "r", steps=4))
    run.records[1]["train_loss"] = None  # the trainer writes non-finite values as null
    assert run.series("train_loss")[0] == [1.0, 3.0, 4.0]
    assert run.series("val_loss", "tokens") == ([400.0], [pytest.approx(8.1)])


def test_loading_a_directory_without_metrics_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        Run.load(tmp_path)
