"""torch.optim contract, state: deepcopy and pickle keep every setting, state_dict() carries them and a contradicting
state is refused by name, load pre-hooks run before the name matching. torch's SGD and AdamW are the controls."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from tests.optim.optim_cases import CONTROLS, NAMES, Tiny, make, same_params, train


def settings(opt) -> list[dict]:
    return [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]


@pytest.mark.parametrize("name", NAMES + CONTROLS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_keeps_settings_state_and_steps_the_same(name, how):
    model = Tiny()
    opt = make(name, model)
    train(model, opt, range(2))
    twin_model, twin = (copy.deepcopy((model, opt)) if how == "deepcopy"
                        else pickle.loads(pickle.dumps((model, opt))))
    assert type(twin) is type(opt)
    assert settings(twin) == settings(opt)
    for attr in getattr(type(opt), "_SETTINGS", ()):
        assert getattr(twin, attr) == getattr(opt, attr), attr
    train(model, opt, range(2, 4))
    train(twin_model, twin, range(2, 4))
    assert same_params(model, twin_model)
    if hasattr(opt, "stats"):
        assert torch.equal(twin.stats()["skipped_steps"], opt.stats()["skipped_steps"])


def test_deepcopy_shares_the_process_group_and_pickle_refuses_it():
    marker = object()  # stands in for a process group: only carried, never used without torch.distributed
    opt = make("scion", Tiny(), process_group=marker)
    assert copy.deepcopy(opt).process_group is marker
    with pytest.raises(TypeError, match="process group"):
        pickle.dumps(opt)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_carries_every_setting_and_loads_weights_only(name):
    model = Tiny()
    opt = make(name, model)
    train(model, opt, range(2))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    for group in saved["param_groups"]:
        missing = [k for k in type(opt)._SETTINGS if k not in group]
        assert not missing, missing
    fresh_model = Tiny(seed=1)
    fresh_model.load_state_dict(model.state_dict())
    fresh = make(name, fresh_model)
    fresh.load_state_dict(saved)
    assert settings(fresh) == settings(opt)
    train(model, opt, range(2, 4))
    train(fresh_model, fresh, range(2, 4))
    assert same_params(model, fresh_model)


@pytest.mark.parametrize("saved_name", NAMES)
@pytest.mark.parametrize("name", NAMES)
def test_a_state_from_another_optimizer_or_setting_is_refused(name, saved_name):
    model = Tiny()
    source = make(saved_name, model)
    train(model, source, range(1))
    opt = make(name, Tiny())
    if name == saved_name:
        opt.load_state_dict(source.state_dict())
        return
    with pytest.raises(ValueError, match="optimizer state"):
        opt.load_state_dict(source.state_dict())


@pytest.mark.parametrize("saved, target, keys", [
    (("clipped_scion", {}), ("unconstrained_scion", {}), ["rho=1.0", "constrained=True"]),
    (("gclip", {"norm_scope": "group"}), ("gclip", {"norm_scope": "global"}), ["norm_scope='group'"]),
    (("muon", {"ns_steps": 4}), ("muon", {"ns_steps": 5}), ["ns_steps=4"]),
    (("adamw", {"max_grad_norm": 1.0}), ("adamw", {}), ["max_grad_norm=1.0"]),
    (("scion", {"ns_dtype": "float32"}), ("scion", {"ns_dtype": "bfloat16"}), ["ns_dtype='float32'"]),
])
def test_the_refusal_names_the_contradicting_settings(saved, target, keys):
    source = make(saved[0], Tiny(), **saved[1])
    opt = make(target[0], Tiny(), **target[1])
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(source.state_dict())
    for key in keys:
        assert f"saved {key}" in str(info.value), str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_runtime_settings_stay_those_of_the_running_optimizer(name):
    source = make(name, Tiny(), backend="torch")
    opt = make(name, Tiny(), backend="auto")
    opt.load_state_dict(source.state_dict())
    assert opt.backend == "auto"


@pytest.mark.parametrize("name", NAMES)
def test_a_state_without_the_settings_keys_takes_the_optimizers(name):
    """State dicts saved before the settings moved into the groups (or by other code) still load."""
    model = Tiny()
    opt = make(name, model)
    train(model, opt, range(1))
    saved = opt.state_dict()
    for group in saved["param_groups"]:
        for key in type(opt)._SETTINGS:
            group.pop(key)
    saved.pop("optimizer")
    fresh = make(name, Tiny())
    fresh.load_state_dict(saved)
    assert settings(fresh) == settings(opt)


@pytest.mark.parametrize("name", NAMES + CONTROLS)
def test_load_pre_hook_renames_before_the_name_matching(name):
    model = Tiny()
    opt = make(name, model, names=("old.weight", "old.bias"))
    train(model, opt, range(2))
    saved = opt.state_dict()
    renamed_model = Tiny()
    renamed = make(name, renamed_model, names=("new.weight", "new.bias"))
    if name in NAMES:
        with pytest.raises(ValueError, match="new.weight"):
            renamed.load_state_dict(saved)
    calls = []

    def rename(optimizer, state_dict):
        calls.append(optimizer)
        state_dict = copy.deepcopy(state_dict)
        for group in state_dict["param_groups"]:
            group["param_names"] = [n.replace("old.", "new.") for n in group["param_names"]]
        return state_dict

    renamed.register_load_state_dict_pre_hook(rename)
    renamed.load_state_dict(saved)
    assert calls == [renamed]
    assert [g["param_names"] for g in renamed.param_groups] == \
        [[n.replace("old.", "new.") for n in g["param_names"]] for g in saved["param_groups"]]
    assert len(renamed.state) == len(opt.state)
    for s, t in zip(renamed.state.values(), opt.state.values()):
        assert all(torch.equal(s[k], t[k]) for k in t if isinstance(t[k], torch.Tensor))
    train(renamed_model, renamed, range(2, 3))


@pytest.mark.parametrize("name", NAMES)
def test_with_settings_of_loads_a_state_whose_settings_changed_on_purpose(name):
    """A resume that applies a changed config keeps the buffers and takes the new settings."""
    import optim

    model = Tiny()
    source = make(name, model)
    train(model, source, range(2))
    key = type(source)._MUST_MATCH[0]
    changed = make(name, Tiny())
    for group in changed.param_groups:
        group[key] = "changed"
    with pytest.raises(ValueError, match=f"saved {key}="):
        changed.load_state_dict(source.state_dict())
    changed.load_state_dict(optim.with_settings_of(changed, source.state_dict()))
    assert all(g[key] == "changed" for g in changed.param_groups)
    for s, t in zip(changed.state.values(), source.state.values()):
        assert all(torch.equal(s[k], t[k]) for k in t if isinstance(t[k], torch.Tensor))
    with pytest.raises(ValueError, match="optimizer state was saved by"):
        other = make("adamw" if name != "adamw" else "sgd", Tiny())
        other.load_state_dict(optim.with_settings_of(other, source.state_dict()))
