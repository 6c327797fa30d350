"""YAML text -> validated pydantic models, with every error naming FILE:LINE: FIELD PATH: message.

PyYAML's composer gives a node tree whose nodes carry their line (``start_mark``); pydantic gives each error a
location such as ``("rules", 2, "features_rule", "when", "leaf", "min_activation")``. We walk the node tree
along that location (skipping the union tags of :data:`schema.UNION_TAGS`) to find the line, and print the
location as ``rules[2].when.min_activation``. Duplicate mapping keys are errors (PyYAML would silently keep the
last one), YAML syntax errors keep their line, and integers and booleans are read YAML 1.2 style so that an
unquoted feature id such as ``14_4141`` stays the string it looks like and ``no`` stays the word "no".

The same machinery loads ``policy test`` case files (:func:`load_yaml_model`).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from safesail_guard.policy import schema
from safesail_guard.policy.schema import PolicyFile

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy (or cases) file."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ValueError):
    """A policy that cannot be loaded or compiled; ``str()`` has one ``file:line: path: message`` per issue."""

    def __init__(self, issues: list[PolicyIssue] | str) -> None:
        self.issues: list[PolicyIssue] = (
            [PolicyIssue("<policy>", None, "", issues)] if isinstance(issues, str) else list(issues))
        super().__init__("\n".join(str(i) for i in self.issues))


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 integers and booleans.

    YAML 1.1 reads ``14_4141`` as the integer 144828 and ``no``/``on``/``yes`` as booleans, which would turn a
    feature id into a number and the language code of Norwegian into ``False``. Here only ``[-+]?[0-9]+``
    (and 0o/0x forms) are integers and only true/false are booleans.
    """


_INT, _BOOL = "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _BOOL)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def format_loc(loc: tuple[Any, ...]) -> str:
    """``("rules", 2, "leaf", "when")`` -> ``"rules[2].when"`` (union tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in schema.UNION_TAGS:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class SourceMap:
    """Where a loaded document came from: file name and the YAML node tree, to find lines for locations."""

    file: str
    root: yaml.Node | None

    def line_of(self, loc: tuple[Any, ...]) -> int | None:
        """1-based line of the deepest YAML node found along ``loc`` (the key's line for mapping entries)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            if isinstance(part, str) and part in schema.UNION_TAGS:
                continue
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def issue(self, loc: tuple[Any, ...], message: str) -> PolicyIssue:
        """A :class:`PolicyIssue` at ``loc``."""
        return PolicyIssue(self.file, self.line_of(loc), format_loc(loc), message)


def read_source(source: str | Path) -> tuple[str, str]:
    """``(yaml_text, file_name)`` from a path, a shipped policy name (``"default"``) or YAML text itself."""
    if isinstance(source, Path):
        path = source
    elif "\n" in source or ":" in source and not Path(source).is_file():
        return source, "<string>"
    elif Path(source).is_file() or source.endswith((".yaml", ".yml")):
        path = Path(source)
    else:
        path = _shipped(source) or Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise PolicyError([PolicyIssue(str(path), None, "", "no such policy file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([PolicyIssue(str(path), None, "", f"cannot read: {exc}")]) from None


def _shipped(name: str) -> Path | None:
    """The shipped policy called ``name``, if the policies package is installed and has it."""
    try:
        from safesail_policies import policy_path
    except ImportError:
        return None
    try:
        return policy_path(name)
    except (FileNotFoundError, ValueError):
        return None


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document: ``(python_data, source_map)``; syntax errors and duplicate keys raise."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        source = SourceMap(file, node)
        if node is None:
            raise PolicyError([PolicyIssue(file, 1, "", "the file is empty")])
        duplicates = list(_duplicate_keys(node, ()))
        if duplicates:
            raise PolicyError([PolicyIssue(file, line, format_loc(loc), msg) for loc, line, msg in duplicates])
        return loader.construct_document(node), source
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise PolicyError([PolicyIssue(file, line, "", f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyIssue(file, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


def _duplicate_keys(node: yaml.Node, loc: tuple[Any, ...]) -> typing.Iterator[tuple[tuple[Any, ...], int, str]]:
    """``(location, line, message)`` for every key repeated inside one mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                line = key.start_mark.line + 1
                if key.value in seen:
                    yield (*loc, key.value), line, f"duplicate key {key.value!r} (first set on line {seen[key.value]})"
                else:
                    seen[key.value] = line
                yield from _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))


def load_yaml_model(text: str, model: type[M], file: str = "<string>") -> tuple[M, SourceMap]:
    """Parse ``text`` and validate it as ``model``; errors become one :class:`PolicyError` with file:line."""
    data, source = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise PolicyError([PolicyIssue(file, source.line_of(()), "",
                                       f"the top level must be a mapping of fields, got {type(data).__name__}")])
    try:
        return model.model_validate(data), source
    except ValidationError as exc:
        issues = [_issue(source, model, err) for err in exc.errors(include_url=False)]
        raise PolicyError(sorted(dict.fromkeys(issues), key=lambda i: (i.line or 0, i.path))) from None


def load_policy(source: str | Path) -> PolicyFile:
    """Load and validate a policy from a file path, a shipped policy name or YAML text.

    Raises :class:`PolicyError` whose message has one ``file:line: field.path: message`` line per problem.
    The returned model remembers its source so later compile errors can name lines too.
    """
    text, file = read_source(source)
    policy, source_map = load_yaml_model(text, PolicyFile, file)
    policy._source = source_map
    return policy


def source_of(policy: PolicyFile) -> SourceMap:
    """The :class:`SourceMap` a policy was loaded from (a line-less one for policies built in Python)."""
    return policy._source if isinstance(policy._source, SourceMap) else SourceMap("<policy>", None)


# ---------------------------------------------------------------------------------------------- error text

_TAG_MODELS: dict[str, type[BaseModel]] = {
    "leaf": schema.Leaf, "any_of": schema.AnyOf, "all_of": schema.AllOf, "features_rule": schema.FeatureRule,
    "over_refusal_rule": schema.OverRefusalRule, "multilingual_gap_rule": schema.MultilingualGapRule,
}


def _issue(source: SourceMap, model: type[BaseModel], err: Any) -> PolicyIssue:
    loc = tuple(err["loc"])
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden" and loc:
        owner = _model_at(model, loc[:-1])
        if owner is not None:
            msg = _unknown_field_message(str(loc[-1]), owner)
    elif err["type"] == "missing" and loc:
        msg = f"required field {loc[-1]!r} is missing"
    return source.issue(loc, msg)


def _unknown_field_message(field: str, owner: type[BaseModel]) -> str:
    valid = list(owner.model_fields)
    close = difflib.get_close_matches(field, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field {field!r}{hint} (valid fields: {', '.join(valid)})"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that validated the value at ``loc`` (None when it cannot be told)."""
    current: Any = model
    for part in loc:
        if isinstance(part, str) and part in _TAG_MODELS:
            current = _TAG_MODELS[part]
            continue
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            if typing.get_origin(current) is list and args:
                current = args[0]
                continue
            return None
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
            continue
        return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` (unions of several models stay as they are)."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp
