"""sample.py: the newest valid checkpoint of a run (or the named one), prompt first, deterministic per seed."""

from __future__ import annotations

import pytest

import sample
from tests.evals.conftest import write_run


def run_sample(capsys, *args: str) -> tuple[int, str, str]:
    code = sample.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_samples_start_with_the_prompt_and_repeat_for_a_seed(run_dir, capsys):
    args = ("--run", str(run_dir), "--prompt", "The os module", "--max-new-tokens", "12", "--num-samples", "2",
            "--device", "cpu", "--seed", "3")
    code, out, err = run_sample(capsys, *args)
    assert code == 0 and "step_0000003.pt (step 3)" in err  # the newest checkpoint
    texts = out.rstrip("\n").split("\n" + sample.SEPARATOR + "\n")
    assert len(texts) == 2 and all(t.startswith("The os module") for t in texts)
    assert texts[0] != texts[1]  # two draws
    assert run_sample(capsys, *args)[1] == out  # the same seed, the same samples
    assert run_sample(capsys, *args[:-1], "4")[1] != out


def test_checkpoint_flag_and_greedy(run_dir, capsys):
    older = run_dir / "checkpoints" / "step_0000002.pt"
    code, out, err = run_sample(capsys, "--checkpoint", str(older), "--prompt", "x", "--max-new-tokens", "5",
                                "--temperature", "0", "--device", "cpu")
    assert code == 0 and "step 2" in err and out.startswith("x")


def test_a_corrupt_newest_checkpoint_is_skipped_with_a_warning(run_dir, capsys):
    newest = run_dir / "checkpoints" / "step_0000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    code, _, err = run_sample(capsys, "--run", str(run_dir), "--max-new-tokens", "2", "--device", "cpu")
    assert code == 0 and "warning: skipping" in err and "step_0000003.pt" in err and "(step 2)" in err


@pytest.mark.parametrize("args, message", [
    (("--run", "{empty}"), "no loadable checkpoint in"),
    (("--run", "{missing}"), "no such directory"),
    (("--checkpoint", "{missing}"), "no such file"),
    ((), "give --run RUN_DIR"),
])
def test_errors_name_what_is_missing(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", missing=tmp_path / "nope") for a in args]
    code, _, err = run_sample(capsys, *args, "--device", "cpu")
    assert code == 2 and message in err


def test_bad_numbers_are_usage_errors(run_dir):
    with pytest.raises(SystemExit):
        sample.main(["--run", str(run_dir), "--max-new-tokens", "0"])


def test_long_prompt_from_a_file(run_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("word " * 100)  # longer than the block (64): the context slides
    code, out, _ = run_sample(capsys, "--run", str(run_dir), "--prompt", f"FILE:{prompt}", "--max-new-tokens", "70",
                              "--device", "cpu")
    assert code == 0 and out.startswith("word word")
    write_run(run_dir, step=4)  # a newer checkpoint is picked up
    assert "(step 4)" in run_sample(capsys, "--run", str(run_dir), "--max-new-tokens", "1", "--device", "cpu")[2]
