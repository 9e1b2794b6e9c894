"""Our GPT as an lm-evaluation-harness model: the three request types on our model, nothing more.

Imports lm_eval at module level: import this module only after `evals.lm_eval.require_lm_eval()`.

- `loglikelihood` (lm-eval's TemplateLM does the text side: trailing spaces of the context move to the
  continuation, context + continuation are encoded together and split; an empty context becomes <|endoftext|>):
  for each (context, continuation) ids, log p(continuation | context) = sum over its tokens of
  log_softmax(logits)[token], and whether greedy decoding would have produced it (argmax at every position).
  Rows longer than the model's block keep their last block_size + 1 tokens (the context's start is cut).
- `loglikelihood_rolling` (perplexity tasks): the text's tokens after <|endoftext|>, scored in disjoint windows of
  at most block_size tokens with lm-eval's own windowing (`get_rolling_token_windows`), summed.
- `generate_until`: KV-cached generation (model/generate.py) from the context's last tokens, greedy unless the
  task asks `do_sample` with a temperature, stopped at any of the task's `until` strings or <|endoftext|>, cut
  before the stop string.

Distributed (torchrun): lm-eval hands each rank its share of the requests (`rank`, `world_size`) and joins the
results through `all_gather` / `gather_object` / `barrier`, implemented here with torch.distributed. Each rank
holds the whole model, so the ranks' forwards are independent.
"""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from data.tokenizer import EOT, EOT_TEXT, gpt2_encoding
from model.generate import generate


class GPTLM(TemplateLM):
    """lm-eval `LM` over our GPT (`model`, in eval mode on its device), the GPT-2 tokenizer and `batch_size`
    sequences per forward of the loglikelihood requests."""

    def __init__(self, model, *, batch_size: int = 8, max_gen_toks: int = 256, autocast=None, rank: int = 0,
                 world_size: int = 1):
        super().__init__()
        self.model = model.eval()
        self.encoding = gpt2_encoding()
        self.batch_size = batch_size
        self.max_gen_toks = max_gen_toks
        self.autocast = autocast or contextlib.nullcontext()
        self._rank, self._world_size = rank, world_size
        self.vocab = model.config.padded_from or model.config.vocab_size

    # ------------------------------------------------------------------ what lm-eval asks of a model
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eot_token_id(self) -> int:
        return EOT

    @property
    def max_length(self) -> int:
        return self.model.config.block_size

    @property
    def tokenizer_name(self) -> str:
        return "gpt2"

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.encoding.encode(string, allowed_special={EOT_TEXT})  # as HF's GPT-2 tokenizer: EOT text -> 50256

    def tok_decode(self, tokens) -> str:
        return self.encoding.decode(list(tokens))

    # ------------------------------------------------------------------ distributed
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._world_size == 1:
            return tensor.reshape(-1)
        parts = [torch.zeros_like(tensor.reshape(-1)) for _ in range(self._world_size)]
        dist.all_gather(parts, tensor.reshape(-1).contiguous())
        return torch.cat(parts)

    def gather_object(self, obj, dst: int = 0):
        if self._world_size == 1:
            return [obj]
        out = [None] * self._world_size if self._rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._world_size > 1:
            dist.barrier()

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: (cache key, context ids, continuation ids) -> (log p(continuation | context), is greedy)."""
        block = self.max_length
        rows = []
        for _, context, continuation in requests:
            whole = (list(context) + list(continuation))[-(block + 1):]
            rows.append((whole[:-1], min(len(continuation), len(whole) - 1)))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))  # long first: little padding
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        device = self.device
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="loglikelihood", disable=disable_tqdm or self._rank != 0):
            chunk = order[start:start + self.batch_size]
            width = len(rows[chunk[0]][0])
            tokens = torch.full((len(chunk), width), EOT, dtype=torch.long)
            for j, i in enumerate(chunk):
                tokens[j, :len(rows[i][0])] = torch.tensor(rows[i][0])
            with self.autocast:
                logits, _ = self.model(tokens.to(device))
            for j, i in enumerate(chunk):
                length, n = len(rows[i][0]), rows[i][1]
                targets = torch.tensor(requests[i][2][-n:] if n else [], dtype=torch.long, device=device)
                logp = F.log_softmax(logits[j, length - n:length].float(), dim=-1)
                ll = logp.gather(1, targets[:, None]).sum().item()
                greedy = bool((logp.argmax(dim=-1) == targets).all().item())
                results[i] = (ll, greedy)
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], (ll, greedy))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in tqdm([r.args for r in requests], desc="loglikelihood_rolling",
                            disable=disable_tqdm or self._rank != 0):
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=EOT, max_seq_len=self.max_length, context_len=1)]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True)
            total = sum(ll for ll, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for context, gen_kwargs in tqdm([r.args for r in requests], desc="generate_until",
                                        disable=disable_tqdm or self._rank != 0):
            kwargs = dict(gen_kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            until = until + [EOT_TEXT] if EOT_TEXT not in until else until
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            keep = max(1, self.max_length - max_new)  # context tokens kept so that most of the answer fits
            ids = self.tok_encode(context)[-keep:] or [EOT]
            prompt = torch.tensor([ids], dtype=torch.long, device=self.device)

            def reached(new: torch.Tensor) -> bool:
                text = self.tok_decode(new[0].tolist())
                return any(stop in text for stop in until)

            tokens = generate(self.model, prompt, max_new, temperature=temperature, vocab_limit=self.vocab,
                              autocast=self.autocast, stop=reached)
            text = self.tok_decode(tokens[0, len(ids):].tolist())
            for stop in until:
                text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            out.append(text)
        return out
