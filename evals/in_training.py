"""Looks at the model during training: text samples (`train.sample_every`) and HellaSwag (`train.hellaswag_every`
on `data.hellaswag`). `Looks(cfg, dist)` is built once before the loop; calling it at a step returns the metrics
to add to that step's record (`sample`, `hellaswag_acc`, `hellaswag_acc_norm`) and prints them on rank 0.

Every rank takes part (identical sampling from one seed, HellaSwag split over the ranks), so a sharded model's
collectives line up; the samples depend on the step and train.seed only.
"""

from __future__ import annotations

import torch

from data.tokenizer import EOT, EOT_TEXT, VOCAB_SIZE, gpt2_encoding
from evals.hellaswag import load_examples, score
from model.generate import generate
from trainer.passes import autocast_context


class Looks:
    def __init__(self, cfg, dist):
        self.tcfg, self.dist = cfg.train, dist
        self.encoding = gpt2_encoding() if (cfg.train.sample_every or cfg.train.hellaswag_every) else None
        # read (and check) the examples before the first step, so a bad file stops the run at once
        self.examples = load_examples(cfg.data.hellaswag) if cfg.train.hellaswag_every else None

    def due(self, every: int, step: int) -> bool:
        return bool(every) and (step % every == 0 or step == self.tcfg.steps)

    def __call__(self, raw_model, step: int) -> dict:
        tcfg, device, out = self.tcfg, self.dist.device, {}
        autocast = autocast_context(device, tcfg.dtype)
        if self.due(tcfg.sample_every, step):
            ids = self.encoding.encode(tcfg.sample_prompt, allowed_special={EOT_TEXT}) or [EOT]
            generator = torch.Generator(device=device).manual_seed(tcfg.seed + step)
            tokens = generate(raw_model, torch.tensor([ids], device=device), tcfg.sample_tokens,
                              temperature=0.8, top_k=200, generator=generator, vocab_limit=VOCAB_SIZE,
                              autocast=autocast)
            out["sample"] = self.encoding.decode(tokens[0].tolist())
            if self.dist.is_main:
                print(f"sample at step {step}: {out['sample']!r}", flush=True)
        if self.due(tcfg.hellaswag_every, step):
            result = score(raw_model, self.examples, self.encoding.encode_ordinary, rank=self.dist.rank,
                           world_size=self.dist.world_size, autocast=autocast)
            out.update(hellaswag_acc=result["hellaswag_acc"], hellaswag_acc_norm=result["hellaswag_acc_norm"])
            if self.dist.is_main:
                print(f"hellaswag at step {step}: acc {result['hellaswag_acc']:.4f} acc_norm "
                      f"{result['hellaswag_acc_norm']:.4f} ({result['n']} examples)", flush=True)
        return out
