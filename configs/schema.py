"""The config tree: ``Config(model, data, optim, train, log)`` and ``load_config(argv)``.

Each package owns its section (``model.ModelConfig``, ``data.config.DataConfig``,
``optim.config.OptimConfig``); the training-run and logging sections live here. See
``configs/base.py`` for the loading rules and the README for the generated key reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from configs.base import (Check, ConfigError, Section, build_section, field, in_range, load_toml, merge_dicts,
                          non_negative, parse_overrides, positive, validate_tree)
from data.config import DataConfig
from model.config import ModelConfig
from model.hf_gpt2 import fill_from_hf
from optim.config import OptimConfig, split_optimizer_tables
from trainer.schedule import fit_phases, warmdown_asked


@dataclass
class TrainConfig(Section):
    KEY = "train"

    steps: int = field(100, check=positive, help="number of optimizer steps of the whole run (sets the LR schedule)")
    batch_size: int = field(32, check=positive, help="global batch size in sequences per optimizer step, the same at "
                                                     "any world size")
    micro_batch_size: int = field(8, check=positive, help="most sequences per forward/backward on one rank: the "
                                                          "largest divisor of batch_size / world_size up to this is "
                                                          "used; gradient accumulation = the rest")
    warmup_steps: int = field(0, check=non_negative, help="linear LR warmup steps from 0 to the base LR (a run "
                                                          "shorter than warmup + warmdown is shared between them in "
                                                          "proportion, warmup first; trainer/schedule.py)")
    warmdown_frac: float = field(0.0, check=in_range(0, 1), help="fraction of the run, at its end, over which the LR "
                                                                 "decays to min_lr_frac (at least 2 steps when > 0)")
    warmdown_steps: Optional[int] = field(None, check=non_negative, help="the warmdown in steps instead of "
                                                                         "train.warmdown_frac (which must then be 0), "
                                                                         "e.g. the reference runs' 1450 of 5100")
    lr_decay: Literal["linear", "cosine"] = field("linear", help="shape of the warmdown")
    min_lr_frac: float = field(0.0, check=in_range(0, 1), help="LR at the end of the warmdown, as a fraction of the "
                                                               "base LR")
    out_dir: str = field("out/run", check=Check(lambda v: bool(v.strip()), "a non-empty path (an unset shell "
                                                                          "variable?)"),
                         help="run directory: metrics.jsonl, config, checkpoints; re-running resumes here")
    checkpoint_every: int = field(0, check=non_negative, help="steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = field(2, check=positive, help="how many of the newest checkpoints to keep")
    resume: Literal["auto", "never", "fresh"] = field(
        "auto", help="'auto' resumes from the newest valid checkpoint in out_dir (error if checkpoints exist but "
                     "none loads); 'fresh' starts from step 0, moving old checkpoints aside; 'never' refuses to "
                     "start if out_dir holds one")
    resume_changes: Literal["refuse", "apply"] = field(
        "refuse", help="on resume, settings that change the run (model, data, optim, schedule, batch, seed) "
                       "differing from the checkpoint's: 'refuse' stops listing them, 'apply' applies them")
    allow_unverified_checkpoints: bool = field(
        False, help="resume from a checkpoint that carries no integrity record (no digest inside, no .sha256 beside "
                    "it: an older version's file whose side file was lost); by default such a file is moved aside "
                    "like a corrupt one")
    eval_every: int = field(0, check=non_negative, help="steps between validation-loss evaluations (0: only at the "
                                                        "end)")
    eval_tokens: int = field(65536, check=non_negative, help="validation tokens per evaluation (a fixed prefix of "
                                                             "the val split)")
    log_every: int = field(1, check=positive, help="steps between console log lines (metrics.jsonl gets every step)")
    sample_every: int = field(0, check=non_negative, help="steps between text samples from the model, printed and "
                                                          "written to metrics.jsonl as `sample` (0: never)")
    sample_prompt: str = field("\n", help="prompt of the samples during training (empty: a new document)")
    sample_tokens: int = field(48, check=positive, help="tokens generated per sample during training")
    hellaswag_every: int = field(0, check=non_negative, help="steps between HellaSwag evaluations on data.hellaswag, "
                                                             "logged as hellaswag_acc/_norm (0: never)")
    seed: int = field(1337, help="seed of model init and data order")
    device: Literal["auto", "cpu", "cuda"] = field("auto", help="'auto': CUDA when available, else CPU")
    dtype: Literal["auto", "float32", "bfloat16"] = field("auto", help="autocast dtype; 'auto': bfloat16 on CUDA, "
                                                                     "float32 on CPU")
    compile: bool = field(False, help="torch.compile the model")
    parallel: Literal["ddp", "fsdp", "hsdp"] = field(
        "ddp", help="data parallelism over ranks: 'ddp' replicates the model; 'fsdp' shards parameters, gradients "
                    "and optimizer state over all ranks (FSDP2); 'hsdp' shards within groups of "
                    "train.shard_degree ranks and replicates across the groups (docs/scale.md)")
    shard_degree: Optional[int] = field(None, check=positive, help="train.parallel='hsdp': ranks per shard group "
                                                                   "(e.g. the GPUs of one node); unset: torchrun's "
                                                                   "local world size (one node); must divide the "
                                                                   "world size")
    fsdp_defer_grad_sync: bool = field(False, help="fsdp/hsdp with gradient accumulation: keep unsharded gradients "
                                                   "across micro-batches and reduce-scatter once per step (fewer "
                                                   "bytes, a whole model's gradient per rank); default: "
                                                   "reduce-scatter every micro-batch into the sharded gradient")
    tf32: bool = field(True, help="TF32 tensor cores for float32 matmuls and convolutions on CUDA (faster fp32 "
                                  "matmuls, e.g. optim.ns_dtype=float32; ~10-bit mantissa products)")
    max_nonfinite_steps: int = field(10, check=positive, help="stop (keeping the last good checkpoint) after this "
                                                              "many consecutive steps skipped for a non-finite loss "
                                                              "or gradient")
    dist_timeout_s: float = field(600.0, check=positive, help="seconds a collective waits for the other ranks "
                                                              "before the run stops with an error (a lost peer "
                                                              "must not hang the job)")
    consistency_check_every: int = field(0, check=non_negative, help="steps between cross-rank checksums of the "
                                                                     "parameters (0: never); a mismatch stops the "
                                                                     "run naming the step and ranks")
    stop_after_step: Optional[int] = field(None, check=positive, help="end this process after this step (with a "
                                                                      "checkpoint) without changing the schedule; "
                                                                      "for time-boxed jobs")

    def check(self) -> None:
        if self.warmdown_steps is not None and self.warmdown_frac:
            raise ConfigError(f"train.warmdown_steps ({self.warmdown_steps}) and train.warmdown_frac "
                              f"({self.warmdown_frac}) both set the warmdown: set one, e.g. --train.warmdown_frac=0 "
                              f"to count it in steps or --train.warmdown_steps=none to keep the fraction")
        if self.consistency_check_every and self.parallel != "ddp":
            raise ConfigError(f"train.consistency_check_every compares the replicated parameters of the ranks; under "
                              f"train.parallel='{self.parallel}' each rank holds other shards, so there is nothing to "
                              f"compare: use train.parallel='ddp' or train.consistency_check_every=0")
        if self.shard_degree is not None and self.parallel != "hsdp":
            raise ConfigError(f"train.shard_degree={self.shard_degree} sets the shard groups of "
                              f"train.parallel='hsdp', but train.parallel is '{self.parallel}'")
        if self.fsdp_defer_grad_sync and self.parallel == "ddp":
            raise ConfigError("train.fsdp_defer_grad_sync applies to train.parallel='fsdp' or 'hsdp' (ddp always "
                              "all-reduces once per step)")

    def fit(self, world_size: int) -> list[str]:
        """Fit the run to its length and world size, before any process group starts; return one warning per
        change. A too-short run is shared between warmup and warmdown (trainer.schedule.fit_phases). The micro-batch
        becomes the largest divisor of batch_size / world_size not above micro_batch_size (set here, so config.json
        records it; one at or above a rank's share is that share, silently: no accumulation is needed); only a
        batch_size that is not a multiple of the world size is an error."""
        notes = []
        warmup, warmdown = fit_phases(self.steps, self.warmup_steps, self.warmdown_frac, self.warmdown_steps)
        asked = warmdown_asked(self.steps, self.warmdown_frac, self.warmdown_steps)
        if (warmup, warmdown) != (self.warmup_steps, asked):
            how = (f"train.warmdown_steps {asked}" if self.warmdown_steps is not None else
                   f"train.warmdown_frac {self.warmdown_frac} x train.steps {self.steps} = {asked} steps")
            notes.append(f"train.warmup_steps ({self.warmup_steps}) and the warmdown ({how}) do not fit "
                         f"train.steps ({self.steps}) as asked: warming up over {warmup} steps, then down over "
                         f"{warmdown} (the run is shared in proportion; a warmdown has at least 2 steps, since a "
                         f"1-step one keeps the peak LR)")
        if self.batch_size % world_size:
            raise ConfigError(f"train.batch_size ({self.batch_size}) must be a multiple of the world size "
                              f"({world_size}) so that every rank gets the same number of sequences")
        per_rank = self.batch_size // world_size
        if self.micro_batch_size >= per_rank:  # the whole share fits one micro-batch: nothing to warn about
            self.micro_batch_size = per_rank
        elif per_rank % self.micro_batch_size:
            micro = max(d for d in range(1, min(per_rank, self.micro_batch_size) + 1) if per_rank % d == 0)
            notes.append(f"train.micro_batch_size ({self.micro_batch_size}) does not divide the "
                         f"{per_rank} sequences per rank (train.batch_size {self.batch_size} / world size "
                         f"{world_size}): using micro-batches of {micro}, gradient accumulation "
                         f"{per_rank // micro}")
            self.micro_batch_size = micro
        return notes


@dataclass
class LogConfig(Section):
    KEY = "log"

    wandb: bool = field(False, help="also log to Weights & Biases (rank 0 only; never required)")
    wandb_project: str = field("clipgpt", help="wandb project name")
    wandb_run_name: Optional[str] = field(None, help="wandb run name (default: the out_dir's name)")
    wandb_group: Optional[str] = field(None, help="wandb group, e.g. to gather the runs of one comparison")
    wandb_mode: Literal["online", "offline", "disabled"] = field("offline", help="'offline' needs no account or "
                                                                             "network; sync later with `wandb sync`")


@dataclass
class Config(Section):
    model: ModelConfig = field(default_factory=ModelConfig, help="the GPT")
    data: DataConfig = field(default_factory=DataConfig, help="token shards")
    optim: OptimConfig = field(default_factory=OptimConfig, help="optimizer")
    train: TrainConfig = field(default_factory=TrainConfig, help="the training run")
    log: LogConfig = field(default_factory=LogConfig, help="logging")

    def check(self) -> None:
        if self.train.hellaswag_every and not self.data.hellaswag:
            raise ConfigError(f"train.hellaswag_every={self.train.hellaswag_every} needs data.hellaswag (a HellaSwag "
                              f"jsonl, e.g. tests/evals/data/hellaswag_small.jsonl, or a hub dataset id)")
        if self.optim.cuda_graph and self.train.device == "cpu":
            raise ConfigError("optim.cuda_graph=true captures the step in a CUDA graph; train.device='cpu' has none "
                              "(set train.device to 'cuda' or 'auto' on a GPU machine, or optim.cuda_graph=false)")
        if self.optim.norm_in_backward and self.optim.gr.enabled:
            raise ConfigError("optim.norm_in_backward=true takes the gradient norm during backward, but optim.gr "
                              "(gradient regularization) rewrites the gradients after backward, so that norm would be "
                              "stale; set optim.gr.enabled=false or optim.norm_in_backward=false")
        if self.optim.norm_in_backward and self.optim.norm_scope != "global":
            raise ConfigError(f"optim.norm_in_backward=true takes the global gradient norm during backward; "
                              f"optim.norm_scope={self.optim.norm_scope!r} needs norms read in step(): use "
                              f"optim.norm_scope='global' or optim.norm_in_backward=false")
        if self.model.vocab_size < 50257 and self.data.dir == "embedded":
            raise ConfigError(f"model.vocab_size ({self.model.vocab_size}) is smaller than the GPT-2 vocabulary "
                              f"(50257) of the embedded corpus")


def with_optimizer_settings(preset: dict, overrides: dict) -> dict:
    """Merge a preset and the CLI overrides, applying the chosen optimizer's table: the values of `optim` are, from
    lowest to highest, the schema defaults, the table `[optim.<name>]` of the chosen `optim.name` (as edited by
    `--optim.<name>.<key>` flags), the preset's own `[optim]` keys, then the `--optim.<key>` flags."""
    preset_own, preset_tables = split_optimizer_tables(preset.get("optim", {}))
    flag_own, flag_tables = split_optimizer_tables(overrides.get("optim", {}))
    tables = merge_dicts(preset_tables, flag_tables)
    name = flag_own.get("name", preset_own.get("name", OptimConfig.name))
    chosen = tables.get(name, {}) if isinstance(name, str) else {}
    merged = merge_dicts({k: v for k, v in preset.items() if k != "optim"},
                         {k: v for k, v in overrides.items() if k != "optim"})
    merged["optim"] = merge_dicts(merge_dicts(chosen, preset_own), flag_own)
    return merged


def load_config(argv: list[str]) -> Config:
    """Build and validate the config from ``--config PATH`` and ``--section.key=value`` flags (the chosen
    optimizer's settings table applied, see ``with_optimizer_settings``)."""
    path, overrides = parse_overrides(argv)
    values = with_optimizer_settings(load_toml(path) if path else {}, overrides)
    model = values.get("model")
    if isinstance(model, dict) and model.get("init_from"):  # the shape comes from the HF checkpoint's config
        values["model"] = fill_from_hf(model)
    cfg = build_section(Config, values, prefix="")
    validate_tree(cfg)
    return cfg
