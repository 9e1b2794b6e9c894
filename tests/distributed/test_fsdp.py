"""train.parallel='fsdp' (FSDP2 on CPU, gloo): every optimizer's sharded step equals the unsharded one; the trainer
at 2 sharded ranks equals one process, also across two `torchrun --nnodes=2` launches; checkpoints move between
fsdp and one process in both directions; each rank holds about half the parameters and optimizer state."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO_ROOT, env, losses, metrics, run_train, run_two_nodes

pytestmark = pytest.mark.slow

OPTIMIZERS = ["adamw", "muon", "sgd", "gclip", "normalized_sgd", "dgclip", "scion", "unconstrained_scion",
              "clipped_scion", "unconstrained_clipped_scion"]
# accumulation 2 at 2 ranks (no reduce-scatter on the first micro-batch), 4 at one process
COMMON = ("--train.steps=4", "--train.batch_size=8", "--train.micro_batch_size=2", "--train.eval_tokens=1024",
          "--model.block_size=32", "--optim.name=unconstrained_clipped_scion", "--optim.lr=1e-3", "--optim.rho=1e4",
          "--optim.ns_dtype=float32")


@pytest.fixture(scope="module")
def worker_results():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO_ROOT / "tests" / "distributed" / "fsdp_worker.py"), ",".join(OPTIMIZERS)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return {row["name"]: row for row in rows}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sharded_step_equals_whole_model(worker_results, name):
    row = worker_results[name]
    assert row["moved"] > 1e-3, row  # the steps did something to every matrix
    assert row["loss_diff"] < 1e-4 and row["param_diff"] < 1e-4 and row["stat_diff"] < 1e-4, row
    assert row["param_bytes_ratio"] <= 0.55, row
    assert row["state_bytes_ratio"] <= 0.55, row  # stateless optimizers report 0


def test_float64_sharded_step_is_float64_math():
    """float64 under FSDP: the gradient norm's partial sums, clip factors and constrained Scion's 1 - lr eta stay
    float64 (fp32 partial sums made them differ by 2e-7..9e-7 relative): sharded equals whole to 1e-12."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO_ROOT / "tests" / "distributed" / "fsdp_worker.py"), "gclip,dgclip,muon,clipped_scion", "float64"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    rows = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert [row["name"] for row in rows] == ["gclip", "dgclip", "muon", "clipped_scion"]
    for row in rows:
        assert row["dtypes"] == ["torch.float64", "torch.int64"], row  # stats, counters and parameters
        assert row["moved"] > 1e-3, row
        assert row["stat_diff"] <= 1e-12 and row["param_diff"] <= 1e-12, row
        assert row["loss_diff"] <= 1e-6, row  # the model returns its loss in fp32 (logits.float()), even in float64


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run_train(f"--train.out_dir={out}", *COMMON, "--train.checkpoint_every=0")
    return out


def test_two_nodes_fsdp_match_one_process(single_process, tmp_path):
    out = tmp_path / "run"
    run_two_nodes(out, *COMMON, "--train.parallel=fsdp", "--train.checkpoint_every=0")
    assert losses(out) == pytest.approx(losses(single_process), rel=1e-4, abs=1e-4)
    one, two = metrics(single_process), metrics(out)
    for key in ("grad_norm", "clip_factor", "dual_norm"):
        assert [m[key] for m in two] == pytest.approx([m[key] for m in one], rel=1e-4), key
    assert two[0]["param_bytes_per_rank"] <= 0.55 * one[0]["param_bytes_per_rank"]
    assert two[0]["optim_state_bytes_per_rank"] <= 0.55 * one[0]["optim_state_bytes_per_rank"]


@pytest.mark.parametrize("first,second", [("fsdp2", "single"), ("single", "fsdp2")])
def test_checkpoint_moves_between_fsdp_and_one_process(single_process, tmp_path, first, second):
    def launch(which, *extra):
        if which == "fsdp2":
            return run_train(f"--train.out_dir={tmp_path}", *COMMON, "--train.parallel=fsdp", *extra, nproc=2)
        return run_train(f"--train.out_dir={tmp_path}", *COMMON, *extra)

    launch(first, "--train.stop_after_step=2", "--train.checkpoint_every=2")
    proc = launch(second, "--train.checkpoint_every=2")
    assert "resumed from" in proc.stdout
    assert losses(tmp_path) == pytest.approx(losses(single_process), rel=1e-4, abs=1e-4)


def test_sharded_checkpoints_rotate_and_a_flipped_bit_is_caught(tmp_path):
    """fsdp checkpoints are DCP directories beside checksummed files: rotation removes old directories, a changed
    shard file makes the checkpoint unreadable (moved aside) and the run resumes from the previous one."""
    args = (f"--train.out_dir={tmp_path}", *COMMON, "--train.parallel=fsdp", "--train.checkpoint_every=1",
            "--train.keep_checkpoints=2")
    run_train(*args, "--train.stop_after_step=3", nproc=2)
    ckpt = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpt.glob("step_*.dcp")) == ["step_0000002.dcp", "step_0000003.dcp"]
    tensors = sum(f.stat().st_size for f in (ckpt / "step_0000003.dcp").iterdir())
    assert (ckpt / "step_0000003.pt").stat().st_size < tensors / 4  # the file holds no tensors, the directory does
    shard = ckpt / "step_0000003.dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    proc = run_train(*args, nproc=2)
    assert "step_0000003.pt" in proc.stderr and "checksum mismatch" in proc.stderr
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    assert (ckpt / "step_0000003.pt.corrupt.dcp").is_dir()
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3, 4]


def test_sample_and_evals_load_an_fsdp_checkpoint_into_a_whole_model(single_process, tmp_path):
    """sample.py / evals.* read an fsdp run's DCP tensors into one process (no process group): the whole model equals
    the one-process run's at the same step, and sample.py generates from it."""
    from evals.checkpoint_model import load_model

    run_train(f"--train.out_dir={tmp_path}", *COMMON, "--train.parallel=fsdp", "--train.checkpoint_every=0", nproc=2)
    assert (tmp_path / "checkpoints" / "step_0000004.dcp").is_dir()
    sharded, whole = load_model(tmp_path, device="cpu"), load_model(single_process, device="cpu")
    assert sharded.step == whole.step == 4
    mine, theirs = sharded.model.state_dict(), whole.model.state_dict()
    assert set(mine) == set(theirs)
    for name, value in mine.items():
        assert value.dtype == theirs[name].dtype and value.shape == theirs[name].shape, name
        # all but a handful of entries agree: the embedding's sign-like LMO may flip an entry whose gradient is ~0
        off = ((value - theirs[name]).abs() > 1e-5 + 1e-4 * theirs[name].abs()).sum().item()
        assert off <= max(1, value.numel() // 100_000), (name, off)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "sample.py"), "--run", str(tmp_path), "--prompt", "The",
                           "--max-new-tokens", "4", "--device", "cpu"], cwd=REPO_ROOT, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("The"), proc.stderr[-2000:]


def test_lm_eval_and_export_read_an_fsdp_checkpoint(tmp_path, capsys):
    """python -m evals.lm_eval and evals.export_hf on an fsdp run's DCP checkpoint: the same numbers and logits as
    on the whole model the loader assembles."""
    from evals.checkpoint_model import load_model
    from evals.export_hf import main as export_main
    from evals.lm_eval import main as lm_eval_main
    from tests.helpers import require

    require("lm_eval")
    transformers = require("transformers")
    run_train(f"--train.out_dir={tmp_path}", *COMMON, "--train.parallel=fsdp", "--train.checkpoint_every=0", nproc=2)
    assert (tmp_path / "checkpoints" / "step_0000004.dcp").is_dir()
    whole = load_model(tmp_path, device="cpu").model
    assert lm_eval_main(["--run", str(tmp_path), "--tasks", "hellaswag_small", "--include-path",
                         str(REPO_ROOT / "evals" / "lm_eval_tasks"), "--limit", "3", "--bootstrap-iters", "0",
                         "--device", "cpu"]) == 0
    metrics_line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(metrics_line["hellaswag_small"]) >= {"acc", "acc_norm", "acc_bytes"}
    assert (tmp_path / "evals" / "lm_eval_step_0000004.json").is_file()
    assert export_main(["--run", str(tmp_path), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    idx = torch.randint(0, 50257, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(idx).logits - whole(idx)[0][..., :50257]).abs().max() <= 1e-4
