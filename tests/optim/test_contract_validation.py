"""torch.optim contract, validation: every group is checked the same way in __init__ and in add_param_group, with an
error naming the group and the value; tensor lrs; torch's common flags accepted or refused clearly. torch's SGD and
AdamW are the controls where they apply."""
from __future__ import annotations

import re

import pytest
import torch

from tests.optim.optim_cases import CONTROLS, NAMES, Tiny, backward, groups, make
from tests.optim.test_every_optimizer import NoHostSync

# A bad value per optimizer for a per-group key: (key, value, words the error must contain).
BAD = {
    "adamw": ("betas", (0.9, 1.5), "betas[1]"),
    "muon": ("momentum", 1.5, "momentum"),
    "sgd": ("momentum", -0.1, "momentum"),
    "gclip": ("gamma", -1.0, "gamma"),
    "normalized_sgd": ("weight_decay", -1.0, "weight_decay"),
    "dgclip": ("delta", 2.0, "delta"),
    "scion": ("norm", "bogus", "norm"),
    "unconstrained_scion": ("radius", 0.0, "radius"),
    "clipped_scion": ("alpha", 0.0, "alpha"),
    "unconstrained_clipped_scion": ("norm", "bogus", "norm"),
}


def extra_group(name: str, **kw) -> dict:
    p = torch.nn.Parameter(torch.randn(2, 4))
    group = {"params": [p], "param_names": ["extra.weight"], **kw}
    if name in ("scion", "unconstrained_scion", "clipped_scion", "unconstrained_clipped_scion"):
        group.setdefault("norm", "spectral")
    return group


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("where", ["init", "add_param_group"])
def test_a_bad_group_value_is_refused_naming_group_and_value(name, where):
    key, value, words = BAD[name]
    model = Tiny()
    if where == "init":
        built = groups(model, name)
        built[0][key] = value
        with pytest.raises(ValueError, match=r"param group 0.*" + re.escape(words)) as info:
            make(name, model, param_groups=built)
    else:
        opt = make(name, model)
        count = len(opt.param_groups)
        with pytest.raises(ValueError, match=rf"param group {count}") as info:
            opt.add_param_group(extra_group(name, **{key: value}))
        assert len(opt.param_groups) == count  # nothing half-added
    shown = value[1] if isinstance(value, tuple) else value
    assert f"got {shown!r}" in str(info.value) or f"got {shown}" in str(info.value), str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_multi_element_tensor_lr_is_refused(name):
    with pytest.raises(ValueError, match="1-element|1 element"):
        make(name, Tiny(), lr=torch.tensor([0.1, 0.2]))
    opt = make(name, Tiny())
    with pytest.raises(ValueError, match="1-element|1 element"):
        opt.add_param_group(extra_group(name, lr=torch.tensor([0.1, 0.2])))


@pytest.mark.parametrize("name", NAMES)
def test_a_one_element_tensor_lr_steps_like_the_float_without_a_host_read(name):
    model, twin = Tiny(), Tiny()
    lr = make(name, Tiny()).defaults["lr"]
    opt, tensor_opt = make(name, model), make(name, twin, lr=torch.tensor(lr))
    for step in range(2):
        backward(model, step)
        opt.step()
        backward(twin, step)
        with NoHostSync():
            tensor_opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_muon_refuses_a_vector_through_add_param_group():
    opt = make("muon", Tiny())
    with pytest.raises(ValueError, match=r"param group 2.*2-D.*\(5,\)"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(5))], "param_names": ["v"]})
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(5))], "param_names": ["v"], "use_muon": False})


@pytest.mark.parametrize("name", ["scion", "clipped_scion"])
def test_scion_refuses_a_vector_under_a_matrix_norm_at_construction(name):
    w = torch.nn.Parameter(torch.zeros(5))
    with pytest.raises(ValueError, match=r"param group 0.*'spectral' needs 2-D.*\(5,\).*bias_rms"):
        make(name, Tiny(), param_groups=[w])


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_wide_settings_cannot_differ_between_groups(name):
    opt = make(name, Tiny())
    key = type(opt)._SETTINGS[0]
    value = {"rho": 7.0, "ns_steps": 2, "max_grad_norm": 3.0}.get(key, "torch")
    if key == "norm_scope":
        value = "global" if opt.norm_scope == "group" else "group"
    with pytest.raises(ValueError, match=rf"{key} is an optimizer-wide setting"):
        opt.add_param_group(extra_group(name, **{key: value}))


# --- torch's common flags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in NAMES if n != "adamw"])
@pytest.mark.parametrize("flag, value", [("maximize", True), ("foreach", False), ("fused", True),
                                         ("capturable", True), ("differentiable", True)])
def test_unsupported_torch_flags_are_refused_by_name(name, flag, value):
    with pytest.raises(ValueError, match=rf"{flag}={value}"):
        make(name, Tiny(), **{flag: value})


@pytest.mark.parametrize("name", [n for n in NAMES if n != "adamw"] + CONTROLS)
@pytest.mark.parametrize("flag, value", [("maximize", False), ("foreach", None), ("foreach", True),
                                         ("fused", None), ("fused", False), ("capturable", False),
                                         ("differentiable", False)])
def test_harmless_torch_flag_values_are_accepted(name, flag, value):
    if name == "torch_sgd" and flag == "capturable":
        pytest.skip("torch.optim.SGD has no capturable flag")
    model = Tiny()
    opt = make(name, model, **{flag: value})
    backward(model, 0)
    opt.step()


@pytest.mark.parametrize("flags", [dict(maximize=True), dict(foreach=True), dict(foreach=False), dict(fused=True),
                                   dict(fused=False), dict(capturable=True)])
def test_adamw_accepts_torch_flags_that_make_sense(flags):
    model = Tiny()
    opt = make("adamw", model, **flags)
    backward(model, 0)
    opt.step()


@pytest.mark.parametrize("flags, words", [(dict(amsgrad=True), "amsgrad"), (dict(differentiable=True),
                                                                                "differentiable"),
                                          (dict(fused=True, foreach=True), "fused=True and foreach=True")])
def test_adamw_refuses_the_others(flags, words):
    with pytest.raises(ValueError, match=words):
        make("adamw", Tiny(), **flags)


def test_adamw_lr_defaults_to_torchs():
    import optim

    ours, theirs = Tiny(), Tiny()
    opt, torch_opt = optim.AdamW(ours.parameters()), torch.optim.AdamW(theirs.parameters(), betas=(0.9, 0.95),
                                                                       weight_decay=0.0)
    assert opt.param_groups[0]["lr"] == torch_opt.param_groups[0]["lr"] == 1e-3
    for step in range(2):
        backward(ours, step)
        opt.step()
        backward(theirs, step)
        torch_opt.step()
    assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(ours.parameters(), theirs.parameters()))
