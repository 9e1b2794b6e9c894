"""Typed config machinery: dataclass sections, TOML presets, dotted CLI overrides, strict validation.

A config is a tree of dataclass sections (subclasses of :class:`Section`). Every key is declared one
way, with :func:`field`: a type annotation, a default, a one-line ``help`` and, where a single value
can be wrong, a ``check`` (``positive``, ``at_least(1)``, ``in_range(0, 1)``, ``one_of(...)``, ...).
Constraints between keys live in the section's ``check()`` method, and only there; nothing else
re-validates a key. ``validate_tree`` runs both, for the whole tree or one section
(``section.validate()``), so a key is checked in exactly one place whoever builds the config.

Values come from three layers, later ones winning: the dataclass defaults, a TOML preset
(``--config configs/tiny.toml``, which may ``include`` other presets), and ``--section.key=value``
flags. Unknown keys, wrong types and failed checks raise :class:`ConfigError`, whose message names
the dotted key and lists what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Union, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad config key or value; the message names the dotted key."""


@dataclasses.dataclass(frozen=True)
class Check:
    """A constraint on one value: ``test(value)`` is true when valid; ``text`` completes "must be ..."."""
    test: Callable[[Any], bool]
    text: str


def at_least(low: float) -> Check:
    return Check(lambda v: v >= low, f">= {low:g}")


def greater_than(low: float) -> Check:
    return Check(lambda v: v > low, f"> {low:g}")


positive = greater_than(0)
non_negative = at_least(0)


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Check:
    """low <= v <= high, with either end open; the text reads like the interval, e.g. "in [0, 1)"."""
    def test(v: Any) -> bool:
        return (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    return Check(test, f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")


def one_of(choices: Any) -> Check:
    choices = tuple(choices)
    return Check(lambda v: v in choices, f"one of {list(choices)}")


non_empty = Check(lambda v: len(v) > 0, "non-empty")


def field(default: Any = dataclasses.MISSING, *, help: str, check: Check | None = None,
          default_factory: Any = dataclasses.MISSING):
    """A config key: its default, a mandatory one-line ``help`` (the README's config reference) and an optional
    ``check`` of its value (not applied to None), run by :func:`validate_tree`."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help, "check": check})


class Section:
    """Base of the config sections. ``KEY`` is the section's dotted place in the tree (for messages when a
    section is validated on its own); subclasses override ``check()`` for constraints between their keys."""
    KEY: ClassVar[str] = ""

    def check(self) -> None:
        """Constraints between keys of this section; raise ConfigError/ValueError naming the keys."""

    def validate(self) -> None:
        """Check this section (types, every field's ``check``, then ``check()``), children first."""
        validate_tree(self, f"{self.KEY}." if self.KEY else "")


# ----------------------------------------------------------------------------- type coercion

def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    if get_origin(tp) in (list, tuple):
        inner = ", ".join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)
        return f"{get_origin(tp).__name__}[{inner}]"
    return getattr(tp, "__name__", str(tp))


def _parse_cli_scalar(text: str) -> Any:
    """Interpret a CLI string the way TOML would (numbers, booleans, lists), else keep it a string."""
    lowered = text.strip()
    if lowered in ("none", "None", "null"):
        return None
    try:
        return tomllib.loads(f"v = {lowered}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting where lossless); raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(f"{key}: invalid value {value!r}; valid values are {', '.join(repr(c) for c in choices)}")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [_parse_cli_scalar(v) for v in value.split(",")] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({_type_name(tp)}), got {value!r}")
        args = [a for a in get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of keys {sorted(f.name for f in dataclasses.fields(tp))}")
        return build_section(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):  # no setting means anything at inf or nan (lr=inf skips every step)
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def build_section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys are errors listing the valid ones."""
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key {name!r}; valid keys in {prefix or 'the config'} are: "
                          f"{', '.join(sorted(types_))}")
    kwargs = {k: coerce(f"{prefix}.{k}" if prefix else k, v, types_[k]) for k, v in values.items()}
    return cls(**kwargs)


# ----------------------------------------------------------------------------- loading

def merge_dicts(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def load_toml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a TOML preset; a top-level ``include = ["other.toml", ...]`` (relative paths) is merged first."""
    path = Path(path)
    if not path.is_file():
        including = f" (included by {str(_seen[-1])!r})" if _seen else ""
        raise ConfigError(f"config file {str(path)!r} does not exist{including}")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {str(path)!r} includes itself")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None
    merged: dict = {}
    includes = data.pop("include", [])
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = merge_dicts(merged, load_toml(path.parent / inc, _seen + (path.resolve(),)))
    return merge_dicts(merged, data)


def parse_overrides(args: list[str]) -> tuple[str | None, dict]:
    """Split ``--config PATH`` and ``--a.b=value`` flags into (config path, nested dict of overrides).

    ``--a.b value`` (a space instead of ``=``) is the same flag, as in argparse, which every other command of the
    repo uses; a value that itself starts with ``--`` needs the ``=`` form."""
    config_path, nested = None, {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}; use --config PATH and --section.key=value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"flag {arg!r} has no value; write {arg}=VALUE (or {arg} VALUE)")
        i += 1
        if key == "config":
            config_path = value
            continue
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"flag --{key} conflicts with an earlier flag")
        node[parts[-1]] = _parse_cli_scalar(value)
    return config_path, nested


def validate_tree(cfg: Any, prefix: str = "") -> None:
    """Validate a config tree: every leaf's type and ``check`` (named by its dotted key), then each section's
    ``check()`` (children first). ValueErrors become ConfigErrors."""
    types_ = _field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate_tree(value, key + ".")
            continue
        coerce(key, value, types_[f.name])
        rule: Check | None = f.metadata.get("check")
        if rule is not None and value is not None and not rule.test(value):
            raise ConfigError(f"{key} must be {rule.text}, got {value!r}")
    check = getattr(cfg, "check", None)
    if check is not None:
        try:
            check()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from None


def to_dict(cfg: Any) -> dict:
    """The config tree as plain nested dicts (TOML/JSON-serialisable, None values dropped)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = to_dict(value)
        elif value is not None:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted key, type name, default, help) for every leaf field of a dataclass tree; the type name
    carries the field's check, e.g. "float, > 0"."""
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = types_[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rule = f.metadata.get("check")
        type_name = _type_name(tp) + (f", {rule.text}" if rule is not None else "")
        yield key, type_name, default, f.metadata.get("help", "")
