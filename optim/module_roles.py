"""Roles by module, for models whose parameter names the `optim.groups.*.patterns` do not know (a Hugging Face model,
your own): `optim.build(model, cfg)` gives a parameter that matches no pattern its role by module.

- `nn.Embedding` weights -> embed (token and position tables);
- the output projection -> head: `model.get_output_embeddings()` where the model has it (Hugging Face), else the last
  `nn.Linear` whose out_features is the vocabulary (the input embedding's rows). Tied to the input embedding it is
  one tensor and takes the embed role, as our GPT's tied `embed.weight` does;
- other 2-D weights -> hidden (nn.Linear, Hugging Face's Conv1D, ...);
- 1-D (and 0-D) tensors -> vector (biases, norm gains).
A tensor of 3 or more dimensions has no role by module: give it one with a pattern.

Each parameter also records whether its layout is known: an `nn.Linear` weight is (out, in) and an `nn.Embedding`
table (rows, dim); other 2-D weights (Conv1D stores (in, out)) are not, and optim/splits.py refuses to guess a split
axis for them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ROLES = ("embed", "hidden", "head", "vector")


@dataclass(frozen=True)
class ParamFacts:
    role: str | None        # None: no role by module (see `why`)
    known_layout: bool      # (out, in) / (rows, dim) known from the module type
    why: str = ""


def _declared(model: nn.Module, accessor: str) -> nn.Module | None:
    """What the model's own `get_input_embeddings` / `get_output_embeddings` (Hugging Face) returns, if anything."""
    get = getattr(model, accessor, None)
    if not callable(get):
        return None
    try:
        return get()
    except (NotImplementedError, AttributeError):
        return None


def _input_embedding(model: nn.Module) -> nn.Embedding | None:
    emb = _declared(model, "get_input_embeddings")
    if isinstance(emb, nn.Embedding):
        return emb
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    return max(tables, key=lambda m: m.num_embeddings) if tables else None


def _output_projection(model: nn.Module, vocab: int | None) -> nn.Module | None:
    out = _declared(model, "get_output_embeddings")
    if isinstance(out, nn.Module) and isinstance(getattr(out, "weight", None), torch.Tensor):
        return out
    if vocab is None:
        return None
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == vocab]
    return linears[-1] if linears else None


def module_facts(model: nn.Module) -> dict[str, ParamFacts]:
    """{parameter name (as model.named_parameters() gives it): ParamFacts} by the rules of the module doc."""
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append((module, attr))
    embedding = _input_embedding(model)
    head = _output_projection(model, embedding.num_embeddings if embedding is not None else None)
    head_weight = id(head.weight) if head is not None else None

    facts = {}
    for name, param in model.named_parameters():
        mine = owners.get(id(param), [])
        is_embedding = any(isinstance(m, nn.Embedding) and a == "weight" for m, a in mine)
        known = is_embedding or any(isinstance(m, nn.Linear) and a == "weight" for m, a in mine)
        if is_embedding:
            role = "embed"  # tied to the output projection too: one tensor, the embed rule (as our GPT's)
        elif id(param) == head_weight:
            role = "head"
        elif param.ndim == 2:
            role = "hidden"
        elif param.ndim <= 1:
            role = "vector"
        else:
            facts[name] = ParamFacts(None, known, f"has shape {tuple(param.shape)}: roles by module cover 1-D and "
                                                  f"2-D tensors only")
            continue
        facts[name] = ParamFacts(role, known)
    return facts
