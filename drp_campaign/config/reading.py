"""Reading a configuration file into a model, every error as one `ConfigError`.

The YAML reader refuses what plain YAML accepts silently or expands without bound (a key given
twice, aliases that expand to a "billion laughs", deep nesting, integers of thousands of digits,
oversized files); pydantic's errors become the `file: key.path[i]: problem` form.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError, KeyProblem, clip, key_part
from .models import ConfigModel

# Key paths for problems that are not at a key.
FILE_KEY = "<file>"
ROOT_KEY = "<root>"

# What a file may hold before it is even parsed into values: far above any real configuration,
# far below what makes loading slow (a YAML alias "billion laughs", nesting that recurses).
MAX_FILE_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000  # scalars, lists and mappings, counting each alias's expansion
MAX_YAML_DEPTH = 32
MAX_INT_DIGITS = 30  # an integer scalar longer than this is refused by the YAML reader already


def absolute_path(path: str | Path) -> Path:
    """Absolute and normalized (no `..`), without resolving symlinks: what the user recognises."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that refuses a key given twice (plain YAML silently keeps the last one)."""


def _construct_unique_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:  # unhashable key: the base constructor reports it
            continue
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {clip(key)} (first given at line {first + 1})", key_node.start_mark
            )
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


def _construct_bounded_int(loader: Any, node: yaml.ScalarNode) -> int:
    """An integer, unless it has more digits than any setting needs (Python refuses to convert
    one of thousands of digits with a ValueError, which is not a YAML error)."""
    if len(node.value) > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"integer of {len(node.value)} characters is out of range", node.start_mark
        )
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except (ValueError, IndexError):  # an explicit `!!int` on text that is not a number (fuzz-found)
        raise yaml.constructor.ConstructorError(
            None, None, f"{clip(node.value)} is tagged !!int but is not an integer", node.start_mark
        ) from None


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_bounded_int)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_node_graph(root: yaml.Node, file: Path) -> None:
    """Refuse a document that would expand or nest beyond reason once constructed.

    Aliases make the composed document a graph: one anchor used nine times, nine levels deep,
    is a billion values once expanded (the "billion laughs"), and an alias inside its own
    anchor makes a cycle. The expanded size and depth are counted here, in one pass over the
    distinct nodes (iteratively: a deep document must not exhaust the stack either)."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            open_nodes.discard(key)
            if size[key] > MAX_YAML_VALUES:
                raise ConfigError(
                    file,
                    _where(node),
                    f"this value expands to more than {MAX_YAML_VALUES} "
                    "values through YAML aliases (*name); write the values out "
                    "instead of nesting aliases",
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError(
                file,
                _where(node),
                "a YAML alias inside the value its anchor names makes the value contain itself; write the value out",
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))
    if height[id(root)] > MAX_YAML_DEPTH:
        node = root
        for _ in range(MAX_YAML_DEPTH):  # down the deepest branch, to the first level too deep
            node = max(_children(node), key=lambda child: height[id(child)])
        raise ConfigError(
            file,
            _where(node),
            f"this value is nested more than {MAX_YAML_DEPTH} "
            "levels deep; a configuration needs a few levels: flatten it",
        )


def _where(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def read_mapping(file: Path) -> dict[str, Any]:
    """Parse a YAML file whose top level must be a mapping."""
    if not file.exists():
        raise ConfigError(file, FILE_KEY, "file does not exist; check the path")
    if not file.is_file():
        raise ConfigError(file, FILE_KEY, "is not a file; give the path of a YAML file")
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                file,
                FILE_KEY,
                f"the file has {size} bytes, more than the "
                f"{MAX_FILE_BYTES} a configuration may have; is it the right file?",
            )
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            file, FILE_KEY, f"cannot be read ({exc}); check its permissions and that it is UTF-8 text"
        ) from None
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_node_graph(root, file)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else FILE_KEY
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        context_mark = getattr(exc, "context_mark", None)
        if context and context_mark and context_mark != mark:
            context += f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
        detail = f"{problem} ({context})" if context else problem
        kind = "invalid YAML" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise ConfigError(file, where, f"{kind}: {detail}; fix the YAML there") from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError(file, ROOT_KEY, "the file is empty; write the configuration as a mapping of keys")
    if not isinstance(data, dict):
        raise ConfigError(
            file,
            ROOT_KEY,
            f"expected a mapping of keys at the top level, got "
            f"{_type_name(data)}; write the configuration as `key: value` lines",
        )
    return data


# --- pydantic errors -> ConfigError ------------------------------------------------------------


def validate_mapping(model: type[ConfigModel], raw: dict[str, Any], file: Path, filled: dict[str, Any]) -> Any:
    """Validate a parsed file against a model; loader-filled keys may not come from the file."""
    for key in model.loader_filled:
        if key in raw:
            raise ConfigError(file, _key_path((key,)), _unknown_key_problem(model, (), key))
    try:
        return model.model_validate({**raw, **filled})
    except ValidationError as exc:
        raise _from_validation_error(exc, model, file) from None


_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string (quote it if YAML reads it as a number or date)",
    "bool_type": "true or false",
    "list_type": "a list, e.g. [a, b]",
    "dict_type": "a mapping of `key: value`",
    "model_type": "a mapping of `key: value`",
    "model_attributes_type": "a mapping of `key: value`",
    "path_type": "a path (a string)",
    "none_required": "null",
}


def _from_validation_error(exc: ValidationError, model: type[ConfigModel], file: Path) -> ConfigError:
    """The first pydantic error as a ConfigError: dotted key path, problem and remedy."""
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, KeyProblem):
        return ConfigError(file, _key_path(loc + cause.sub_path), cause.problem)
    if kind == "missing":
        problem = f"required key '{loc[-1]}' is missing; add it"
    elif kind == "extra_forbidden":
        problem = _unknown_key_problem(model, loc[:-1], str(loc[-1]))
    elif kind in _EXPECTED:
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
            problem = f"key {clip(value)} must be a string; quote it"
        else:
            problem = f"wrong type: expected {_EXPECTED[kind]}, got {_show(value)}; write the value as that type"
    elif kind == "literal_error":
        problem = f"{_show(value)} is not allowed; use one of {ctx.get('expected')}"
    elif kind == "greater_than":
        problem = f"must be greater than {_number(ctx['gt'])}, got {clip(value)}; set a positive value"
    elif kind == "greater_than_equal":
        problem = f"must be at least {_number(ctx['ge'])}, got {clip(value)}; set a value >= {_number(ctx['ge'])}"
    elif kind == "less_than_equal":
        problem = f"must be at most {_number(ctx['le'])}, got {clip(value)}; set a value <= {_number(ctx['le'])}"
    elif kind == "too_short":
        problem = (
            f"must have at least {ctx['min_length']} entr"
            f"{'y' if ctx['min_length'] == 1 else 'ies'}, got none; add "
            f"{'it' if ctx['min_length'] == 1 else 'them'}"
        )
    elif kind in ("too_long", "string_too_long"):
        limit = ctx.get("max_length")
        unit = "characters" if kind == "string_too_long" else "entries"
        problem = f"must have at most {limit} {unit}, got more; shorten it"
    else:
        problem = f"{error['msg']} (got {_show(value)}); fix the value"
    return ConfigError(file, _key_path(loc), problem)


def _unknown_key_problem(model: type[ConfigModel], loc: tuple[Any, ...], key: str) -> str:
    owner = _model_at(model, loc)
    if owner is None:
        return f"unknown key {clip(key)}; remove it or fix its spelling"
    allowed = [name for name in owner.model_fields if name not in owner.loader_filled]
    return f"unknown key {clip(key)}; allowed keys here: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[ConfigModel] | None:
    """The model class that validates the mapping at `loc` (walking fields, dicts and lists)."""
    annotation: Any = model
    for part in loc:
        annotation = _strip_optional(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        else:
            return None
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return annotation
    return None


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _key_path(loc: tuple[Any, ...]) -> str:
    """('steps', 'step2c', 'after', 0) -> 'steps.step2c.after[0]'."""
    path = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool) and path:
            path += f"[{part}]"
        else:
            part = key_part(part)
            path += f".{part}" if path else part
    return path or ROOT_KEY


def _number(bound: float) -> str:
    """A bound as people write it: 10000000, not 1e+07."""
    return str(int(bound)) if float(bound).is_integer() and abs(bound) < 1e15 else f"{bound:g}"


def _type_name(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return f"{clip(value)} ({_type_name(value)})"
