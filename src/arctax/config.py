"""Configuration files: load and merge YAML, validate against the schema, fill its defaults.

The YAML layer: :func:`load_config` gives the validated plain ``dict`` (what Snakemake calls
``config``); :mod:`arctax.settings` types it once (:func:`arctax.settings.load_settings`) and
the library takes those typed blocks. Trial 69 lives in ``config/config.yaml`` under
``trial69``; nothing in the code repeats its numbers.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

MAX_YAML_BYTES = 4 * 2**20  # a config overlay is a few KB
MAX_YAML_DEPTH = 32  # config/config.yaml nests 5 deep
MAX_YAML_NODES = 200_000  # after aliases: each use of an anchor counts its whole node again


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key and the fix."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth bound while composing and, before anything is
    constructed, a bound on the document's size with every alias expanded (a "billion
    laughs" document is a few hundred bytes; a recursive anchor never ends)."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                self.peek_event().start_mark,
            )  # fmt: skip
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node: Any) -> Any:
        sizes: dict[int, tuple[int, int] | None] = {}

        def size(n: Any) -> tuple[int, int]:  # (nodes, depth) with aliases expanded
            if id(n) in sizes:
                got = sizes[id(n)]
                if got is None:
                    raise yaml.constructor.ConstructorError(
                        None, None, "an anchor that contains itself", n.start_mark
                    )
                return got
            sizes[id(n)] = None
            kids = [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode) else (
                n.value if isinstance(n, yaml.SequenceNode) else []
            )  # fmt: skip
            count, deep = 1, 0
            for k in kids:
                c, d = size(k)
                count, deep = count + c, max(deep, d)
                if count > MAX_YAML_NODES or deep >= MAX_YAML_DEPTH:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"over {MAX_YAML_NODES} values or {MAX_YAML_DEPTH} levels "
                        "once its aliases are expanded", n.start_mark,
                    )  # fmt: skip
            sizes[id(n)] = (count, deep + 1)
            return count, deep + 1

        size(node)
        return super().construct_document(node)


def load_yaml(path: str | Path) -> Any:
    """A YAML file from elsewhere (a config overlay, ``best.yaml``): a regular file of at most
    :data:`MAX_YAML_BYTES`, composed under the depth and size bounds of :class:`_BoundedLoader`;
    any failure is one :class:`ConfigError` naming the file."""
    from arctax.io import ReadError, read_bytes

    try:
        text = read_bytes(path, MAX_YAML_BYTES, "config file")
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except ReadError as e:
        raise ConfigError(str(e)) from None
    except yaml.MarkedYAMLError as e:
        at = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{path}: not valid YAML ({e.problem or e.context}{at})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    except (ValueError, RecursionError, OSError) as e:  # an int over 4300 digits, a bad read
        raise ConfigError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``over``, recursing into nested mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(*paths: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load ``config/config.yaml``, merge ``paths`` over it in order, then ``overrides``.

    As Snakemake does (the Snakefile's ``configfile:`` first, then every ``--configfile``), so
    an overlay such as ``config/demo.yaml`` works alone and means the same everywhere.
    """
    given = [Path(p) for p in paths]
    files = [DEFAULT_CONFIG] + [
        f for f in given if not (f.is_file() and f.resolve() == DEFAULT_CONFIG.resolve())
    ]
    cfg: dict[str, Any] = {}
    for f in files:
        data = load_yaml(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{f}: top level must be a mapping of keys")
        cfg = deep_merge(cfg, data)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    validate_config(cfg)
    return fill_defaults(cfg)


def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text())


def _message(e: Any) -> str:
    """One line for a schema error: the key, what is wrong, and what is allowed."""
    key = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, Mapping):
        allowed = list(e.schema.get("properties", {}))
        unknown = sorted(k for k in e.instance if k not in allowed)
        where = f"'{key}'" if key else "the top level"
        names = ", ".join(f"'{f'{key}.' if key else ''}{k}'" for k in unknown)
        return f"unknown config key {names} in {where}; allowed keys: {', '.join(allowed)}"
    if e.validator == "required":
        return f"config key '{key or '(top level)'}': {e.message} (add it to your config YAML)"
    return f"config key '{key or '(top level)'}': {e.message}"


def fill_defaults(cfg: dict[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Set the schema's ``default`` for every absent key, in place (as Snakemake's validate does)."""
    spec = schema or _schema()
    defs = spec.get("$defs", {})

    def walk(node: dict[str, Any], s: Mapping[str, Any]) -> None:
        while "$ref" in s:
            s = defs[s["$ref"].split("/")[-1]]
        for key, sub in s.get("properties", {}).items():
            if key not in node and "default" in sub:
                node[key] = copy.deepcopy(sub["default"])
            if isinstance(node.get(key), dict):
                walk(node[key], sub)

    walk(cfg, spec)
    return cfg


def _md_value(value: Any) -> str:
    """A default as config/README.md shows it (YAML's flow style)."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def key_table(block: str) -> str:
    """config/README.md's table of ``block``'s keys, made from the schema (key, default,
    description): the schema is the one place a key is documented (``make config-doc``)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]

    def add(props: Mapping[str, Any], prefix: str) -> None:
        for key, spec in props.items():
            nested = spec.get("properties")
            if nested and spec.get("default") == {}:  # a sub-block: one row per key
                add(nested, f"{prefix}{key}.")
                continue
            default = f"`{_md_value(spec['default'])}`" if "default" in spec else "required"
            rows.append(f"| `{prefix}{key}` | {default} | {spec.get('description', '')} |")

    add(_schema()["properties"][block]["properties"], "")
    return "\n".join(rows) + "\n"


KEY_TABLE = re.compile(r"(<!-- keys: (\w+) .*?-->\n)(.*?)(<!-- end keys -->)", re.S)


def key_tables_text(text: str) -> str:
    """``text`` (config/README.md) with each generated key table made anew from the schema."""
    return KEY_TABLE.sub(lambda m: m[1] + key_table(m[2]) + m[4], text)


def write_key_tables(path: str | Path) -> None:
    """Regenerate the key tables of ``path`` in place (``make config-doc``)."""
    from arctax.io import atomic_write_text

    p = Path(path)
    atomic_write_text(p, key_tables_text(p.read_text()))


def validate_config(cfg: Mapping[str, Any], schema: Path = SCHEMA) -> None:
    """Validate ``cfg`` against the JSON schema; raise one :class:`ConfigError` naming the key.

    Types are checked strictly: a string ``"32"`` where an integer belongs is an error (only
    ``--config``/``--set`` strings from a command line are converted, by the callers).
    """
    import jsonschema

    from arctax.io import unsafe_name

    run = cfg.get("run")
    why = unsafe_name(run) if isinstance(run, str) else None
    if why:  # the schema's pattern says the same; this check does not depend on it
        raise ConfigError(
            f"config key 'run': {run!r} cannot name the folder results/<run>/ ({why}); "
            "give a plain name, e.g. run: trial69"
        )
    spec = yaml.safe_load(schema.read_text())
    validator = jsonschema.Draft202012Validator(spec)
    errors = sorted(validator.iter_errors(dict(cfg)), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_message(errors[0]))


def model_block_error(name: str, block: Mapping[str, Any], schema: Path = SCHEMA) -> str | None:
    """Why ``block`` (constructor arguments, e.g. a checkpoint's ``model_cfg``) is not a valid
    ``models.<name>`` block of the schema: the built-in's definition (its keys, types and
    ranges), or any block for a model of one's own (its class checks it); None when it is.
    Read from the schema, so a key added there is checked here too."""
    import jsonschema

    spec = yaml.safe_load(schema.read_text())
    models = spec["properties"]["models"]
    sub = models["properties"].get(name)
    if sub is None:  # a model of one's own: the reserved keys are not constructor arguments
        sub = {k: v for k, v in models["additionalProperties"].items() if k != "required"}
    validator = jsonschema.Draft202012Validator({"$defs": spec.get("$defs", {}), **sub})
    errors = sorted(validator.iter_errors(dict(block)), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    e = errors[0]
    key = ".".join(str(x) for x in e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, Mapping):
        allowed = set(e.schema.get("properties", {}))
        unknown = sorted(str(k) for k in e.instance if k not in allowed)
        return f"has unknown key(s) {', '.join(unknown)[:120]} for {name}"
    return f"{key + ': ' if key else ''}{e.message[:200]}"


def coerce_to_schema(cfg: dict[str, Any], schema: Path = SCHEMA) -> dict[str, Any]:
    """Turn numeric/boolean strings into numbers/booleans where the schema expects them.

    Snakemake's ``--config key=[1,2]`` or ``key={"a": 3}`` hands nested values over as
    strings; this makes such overrides work like the same values written in a YAML file.
    """
    spec = yaml.safe_load(schema.read_text())
    defs = spec.get("$defs", {})

    def resolve(s: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in s:
            s = defs[s["$ref"].split("/")[-1]]
        return s

    def convert(value: Any, s: Mapping[str, Any]) -> Any:
        s = resolve(s)
        types = s.get("type", [])
        types = [types] if isinstance(types, str) else types
        if isinstance(value, dict):
            props, extra = s.get("properties", {}), s.get("additionalProperties")
            return {
                k: convert(v, props[k])
                if k in props
                else convert(v, extra)
                if isinstance(extra, Mapping)
                else v
                for k, v in value.items()
            }
        if isinstance(value, list) and "items" in s:
            return [convert(v, s["items"]) for v in value]
        if isinstance(value, str) and "string" not in types:
            low = value.strip().lower()
            if "null" in types and low in ("null", "none", "~"):
                return None
            if "boolean" in types and low in ("true", "false"):
                return low == "true"
            # a number written as an integer stays one (a search space's int bounds)
            for kind, cast in (("integer", int), ("number", int), ("number", float)):
                if kind in types:
                    try:
                        return cast(value)
                    except ValueError:
                        pass
        return value

    return convert(cfg, spec)
