"""The ten optimizers of the registry built directly on a tiny module (a 3x4 matrix and a bias), with settings away
from their defaults, plus torch's SGD and AdamW as controls: the cases of the torch.optim contract tests."""
from __future__ import annotations

import pytest
import torch

import optim

NAMES = list(optim.OPTIMIZER_NAMES)
CONTROLS = ["torch_sgd", "torch_adamw"]
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                   reason="needs CUDA")])]
SCION_KW = {"scion": dict(rho=None, constrained=True), "unconstrained_scion": dict(rho=None, constrained=False),
            "clipped_scion": dict(rho=1.0, constrained=True),
            "unconstrained_clipped_scion": dict(rho=1.0, constrained=False)}


class Tiny(torch.nn.Module):
    def __init__(self, seed: int = 0, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(3, 4, generator=g, dtype=dtype) * 0.5)
        self.bias = torch.nn.Parameter(torch.randn(3, generator=g, dtype=dtype) * 0.1)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias)


def groups(module: Tiny, name: str, names=("weight", "bias")) -> list[dict]:
    """Named param groups; Muon and the Scion family get the matrix and the vector in groups of their own."""
    w, b = module.weight, module.bias
    if name == "muon":
        return [{"params": [w], "param_names": [names[0]]},
                {"params": [b], "param_names": [names[1]], "use_muon": False}]
    if name in SCION_KW:
        return [{"params": [w], "param_names": [names[0]], "norm": "spectral", "radius": 2.0},
                {"params": [b], "param_names": [names[1]], "norm": "bias_rms", "radius": 1.0}]
    return [{"params": [w, b], "param_names": list(names)}]


def make(name: str, module: Tiny, names=("weight", "bias"), param_groups=None, **kw) -> torch.optim.Optimizer:
    """Optimizer `name` over `module` (or over `param_groups`), settings away from the defaults where there are any."""
    g = groups(module, name, names) if param_groups is None else param_groups
    if name == "adamw":
        return optim.AdamW(g, **{"lr": 1e-2, "weight_decay": 0.1, **kw})
    if name == "muon":
        return optim.Muon(g, **{"lr": 0.02, "ns_steps": 4, "ns_dtype": "float32", "weight_decay": 0.1, **kw})
    if name == "sgd":
        return optim.SGD(g, **{"lr": 0.1, "momentum": 0.9, "weight_decay_mode": "decoupled", **kw})
    if name == "gclip":
        return optim.GClip(g, **{"lr": 0.1, "gamma": 0.5, "momentum": 0.9, "norm_scope": "group", **kw})
    if name == "normalized_sgd":
        return optim.NormalizedSGD(g, **{"lr": 0.1, "beta": 0.1, **kw})
    if name == "dgclip":
        return optim.DeltaGClip(g, **{"lr": 0.1, "gamma": 0.5, "delta": 0.2, "norm_scope": "group", **kw})
    if name in SCION_KW:
        return optim.ClippedScion(g, **{"lr": 0.05, "alpha": 0.5, "ns_steps": 4, "ns_dtype": "float32",
                                        **SCION_KW[name], **kw})
    if name == "torch_sgd":
        return torch.optim.SGD(g, **{"lr": 0.1, "momentum": 0.9, **kw})
    if name == "torch_adamw":
        return torch.optim.AdamW(g, **{"lr": 1e-2, **kw})
    raise KeyError(name)


def loss_of(module: Tiny, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A fixed batch's loss (after zeroing the gradients)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 4, generator=g, dtype=module.weight.dtype).to(module.weight.device)
    module.zero_grad(set_to_none=True)
    return (module(x) ** 2).mean() * scale


def backward(module: Tiny, seed: int, scale: float = 1.0) -> torch.Tensor:
    loss = loss_of(module, seed, scale)
    loss.backward()
    return loss


def train(module: Tiny, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        backward(module, step)
        opt.step()


def same_params(a: Tiny, b: Tiny) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
