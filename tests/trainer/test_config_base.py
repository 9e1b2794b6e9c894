"""The config machinery: TOML + dotted overrides, strict keys and types, validation messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import pytest

from configs.base import (ConfigError, Section, build_section, field, in_range, iter_fields, load_toml,
                          parse_overrides, positive, to_dict, validate_tree)


@dataclass
class Inner(Section):
    KEY = "sec.inner"

    rho: float = field(1.0, check=positive, help="threshold")
    kind: Literal["a", "b"] = field("a", help="choice")
    frac: float = field(0.5, check=in_range(0, 1, high_open=True), help="fraction")

    def check(self) -> None:
        if self.kind == "b" and self.frac == 0:
            raise ValueError("sec.inner.kind='b' needs sec.inner.frac > 0")


@dataclass
class Sec:
    steps: int = field(10, help="steps")
    name: Optional[str] = field(None, help="name")
    flag: bool = field(False, help="flag")
    sizes: list[int] = field(default_factory=lambda: [1, 2], help="sizes")
    inner: Inner = field(default_factory=Inner, help="nested")


@dataclass
class Root:
    sec: Sec = field(default_factory=Sec, help="section")


def test_defaults_and_types():
    cfg = build_section(Root, {}, prefix="")
    assert cfg.sec.steps == 10 and cfg.sec.inner.kind == "a"
    cfg = build_section(Root, {"sec": {"steps": 3, "flag": True, "inner": {"rho": 2}}}, prefix="")
    assert cfg.sec.steps == 3 and cfg.sec.flag is True and cfg.sec.inner.rho == 2.0


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        build_section(Root, {"sec": {"stepz": 3}}, prefix="")
    msg = str(err.value)
    assert "sec.stepz" in msg and "steps" in msg and "flag" in msg and "inner" in msg


def test_wrong_type_and_literal_are_errors():
    with pytest.raises(ConfigError, match=r"sec\.steps.*integer"):
        build_section(Root, {"sec": {"steps": "many"}}, prefix="")
    with pytest.raises(ConfigError, match=r"sec\.inner\.kind.*'a', 'b'"):
        build_section(Root, {"sec": {"inner": {"kind": "c"}}}, prefix="")
    with pytest.raises(ConfigError, match=r"sec\.steps"):
        build_section(Root, {"sec": {"steps": 2.5}}, prefix="")


def test_field_checks_and_section_checks_name_the_key():
    cfg = build_section(Root, {"sec": {"inner": {"rho": -1}}}, prefix="")
    with pytest.raises(ConfigError, match=r"^sec\.inner\.rho must be > 0, got -1\.0$"):
        validate_tree(cfg)
    cfg = build_section(Root, {"sec": {"inner": {"frac": 1.0}}}, prefix="")
    with pytest.raises(ConfigError, match=r"^sec\.inner\.frac must be in \[0, 1\), got 1\.0$"):
        validate_tree(cfg)
    cfg = build_section(Root, {"sec": {"inner": {"kind": "b", "frac": 0}}}, prefix="")
    with pytest.raises(ConfigError, match=r"kind='b' needs sec\.inner\.frac > 0"):  # a ValueError, wrapped
        validate_tree(cfg)
    with pytest.raises(ConfigError, match=r"^sec\.inner\.rho must be > 0"):  # one section on its own, by its KEY
        Inner(rho=0.0).validate()
    with pytest.raises(ConfigError, match=r"sec\.inner\.kind: invalid value 'c'"):  # types too, built directly
        Inner(kind="c").validate()
    Inner(kind="b").validate()


def test_cli_overrides_parse_like_toml():
    path, over = parse_overrides(["--config", "x.toml", "--sec.steps=5", "--sec.flag", "true",
                                  "--sec.sizes=3,4", "--sec.name=run1", "--sec.inner.rho=1e-3"])
    assert path == "x.toml"
    cfg = build_section(Root, over, prefix="")
    assert cfg.sec.steps == 5 and cfg.sec.flag is True and cfg.sec.sizes == [3, 4]
    assert cfg.sec.name == "run1" and cfg.sec.inner.rho == 1e-3


def test_cli_rejects_bare_values_and_missing_values():
    with pytest.raises(ConfigError, match="unexpected argument"):
        parse_overrides(["steps=3"])
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--sec.steps"])


def test_cli_value_after_a_space_equals_the_equals_form():
    """`--train.steps 50` and `--train.steps=50` are the same flag (as in every argparse command of the repo);
    a value that itself starts with `--` needs the `=` form, and a flag followed by another flag has no value."""
    assert parse_overrides(["--sec.steps", "50", "--sec.name", "a b"]) == parse_overrides(
        ["--sec.steps=50", "--sec.name=a b"])
    assert parse_overrides(["--sec.name=--x"])[1] == {"sec": {"name": "--x"}}
    with pytest.raises(ConfigError, match=r"flag '--sec.steps' has no value; write --sec.steps=VALUE"):
        parse_overrides(["--sec.steps", "--sec.name=a"])


def test_toml_include_and_errors(tmp_path):
    (tmp_path / "base.toml").write_text("[sec]\nsteps = 7\nflag = true\n")
    (tmp_path / "top.toml").write_text('include = ["base.toml"]\n[sec]\nsteps = 9\n')
    assert load_toml(tmp_path / "top.toml") == {"sec": {"steps": 9, "flag": True}}
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[sec\n")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        load_toml(tmp_path / "bad.toml")


def test_to_dict_and_iter_fields_cover_every_leaf():
    cfg = build_section(Root, {}, prefix="")
    assert to_dict(cfg) == {"sec": {"steps": 10, "flag": False, "sizes": [1, 2],
                                    "inner": {"rho": 1.0, "kind": "a", "frac": 0.5}}}
    rows = list(iter_fields(Root))
    assert [k for k, *_ in rows] == ["sec.steps", "sec.name", "sec.flag", "sec.sizes", "sec.inner.rho",
                                     "sec.inner.kind", "sec.inner.frac"]
    assert dict((k, t) for k, t, *_ in rows)["sec.inner.frac"] == "float, in [0, 1)"  # the check is documented
