"""YAML configs with ``--set key=value`` overrides, validated against dataclass schemas.

Each side declares its config as a dataclass (nested dataclasses become dotted keys) built with
:func:`option` and :func:`section`, so everything about a key lives in its field's metadata:
``help`` (the docs), a range (``gt``/``ge``/``lt``/``le``, checked here for every key) and
``results`` (whether the key changes results: a resume must keep it, :func:`fingerprint`).
Loading checks every key, type and range before anything runs, so a typo fails in a second
instead of after an hour of training; a schema's ``validate()`` adds the cross-key rules, and
its ``MOVED_KEYS`` names the new key of a renamed one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Union, get_args, get_origin

import yaml

from fedticket.errors import ConfigError

__all__ = ["ConfigError", "load_config", "parse_overrides", "to_dict", "describe", "flatten",
           "unflatten", "option", "section", "result_keys", "fingerprint"]

_RANGE = ("gt", "ge", "lt", "le")


def option(default, help: str, *, gt=None, ge=None, lt=None, le=None,  # noqa: A002
           results: bool = True, **kw):
    """A config key: its default, its help line, its range, whether it changes results.

    ``results=False`` marks what may differ between a run and its resumption without changing
    any number (rounds, paths, timeouts, resources). A new key changes results unless it says
    otherwise: the safe side for resume.
    """
    meta: dict[str, Any] = {"help": help, "results": results}
    meta.update({k: v for k, v in zip(_RANGE, (gt, ge, lt, le)) if v is not None})
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta,
                                 **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def section(cls, help: str = "", *, results: bool = True):  # noqa: A002
    """A nested config section; ``results=False`` covers all its keys."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "results": results})


def _range_text(meta: Mapping[str, Any]) -> str | None:
    lo = ("(", meta["gt"]) if "gt" in meta else ("[", meta["ge"]) if "ge" in meta else None
    hi = (")", meta["lt"]) if "lt" in meta else ("]", meta["le"]) if "le" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]}"
    return None


def _in_range(v, meta: Mapping[str, Any]) -> bool:
    # written so that NaN fails every bound
    return all((k != "gt" or v > b) and (k != "ge" or v >= b) and (k != "lt" or v < b)
               and (k != "le" or v <= b) for k, b in meta.items() if k in _RANGE)


def _check_ranges(cfg, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            _check_ranges(v, prefix + f.name + ".")
            continue
        rng = _range_text(f.metadata)
        if rng is None or v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not _in_range(v, f.metadata):
            nullable = type(None) in get_args(hints[f.name])
            raise ConfigError(f"{prefix}{f.name} must be {rng}{' or null' if nullable else ''}, "
                              f"got {v}")


def result_keys(schema, prefix: str = "") -> list[str]:
    """The dotted keys of ``schema`` that change results (``results`` metadata, default True)."""
    keys = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if not f.metadata.get("results", True):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(result_keys(hints[f.name], prefix + f.name + "."))
        else:
            keys.append(prefix + f.name)
    return keys


def fingerprint(cfg) -> str:
    """Hash of the values of every result-changing key: equal fingerprints, comparable runs."""
    import hashlib
    import json

    flat = flatten(to_dict(cfg))
    text = json.dumps({k: flat[k] for k in result_keys(type(cfg))}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_overrides(overrides) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``; values parsed as YAML scalars."""
    out: dict = {}
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r} (example: --set rounds=5)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set has an empty key in {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{p}' is set both as a value and as a section")
        node[parts[-1]] = value
    return out


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}``: the one dotted-key view of a config."""
    out: dict[str, Any] = {}
    for k, v in nested.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``; hyphens read as underscores (Flower's TOML style)."""
    out: dict = {}
    for key, value in flat.items():
        parts = str(key).replace("-", "_").split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}': '{p}' is set both as a value and as a section")
        node[parts[-1]] = value
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _type_name(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str):
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key '{key}' must be null, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}{extra}")
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is list:
            # allow "--set levels=1,5,10" as a comma list
            if isinstance(value, str):
                value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
            else:
                value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return origin(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section; give it a mapping, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value:  # NaN passes no comparison a validate() makes: never a setting
                raise ConfigError(f"config key '{key}' must be a number, got nan")
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r}")


def _from_dict(schema, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            full = prefix + str(key)
            moved = getattr(schema, "MOVED_KEYS", {})
            if key in moved:
                raise ConfigError(f"config key '{full}' was replaced: {moved[key]}")
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            extra = f" Did you mean '{prefix}{hint[0]}'?" if hint else ""
            valid = ", ".join(prefix + f for f in fields)
            raise ConfigError(f"unknown config key '{full}'.{extra} Valid keys here: {valid}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return schema(**kwargs)
    except TypeError as e:  # a required field without default
        raise ConfigError(f"config section '{prefix or '<root>'}' is incomplete: {e}") from None


def load_config(schema, path: str | Path | None = None, overrides=(), base: dict | None = None):
    """Build a validated ``schema`` instance from ``base`` < YAML file < ``--set`` overrides."""
    data: dict = dict(base or {})
    if path is not None:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {p} is a folder; pass a YAML file with -c")
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (pass an existing YAML file with -c)")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config file {p} is not a text file (not UTF-8); pass a YAML "
                              "config, e.g. configs/fl/quickstart.yaml") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            # YAML's message spans lines (marks, carets): one line, the first problem named
            what = " ".join(str(getattr(e, "problem", None) or e).split())
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {p} is not valid YAML{where}: {what}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys to values")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(overrides))
    cfg = _from_dict(schema, data)
    _validate_tree(cfg)
    return cfg


def _validate_tree(cfg, ranges: bool = True):
    if ranges:
        _check_ranges(cfg)  # every key's own range first, then each section's cross-key rules
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            _validate_tree(v, ranges=False)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def describe(schema, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every key of a schema: the source of the config docs."""
    rows = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, prefix + f.name + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        rng = _range_text(f.metadata)
        rows.append((prefix + f.name, _type_name(tp) + (f", {rng}" if rng else ""), default,
                     f.metadata.get("help", "")))
    return rows
