"""Rule files (YAML): read, with the line of every value, so each error says ``FILE:LINE: reason``.

The file is composed into YAML nodes (PyYAML's safe loader) and turned into plain values by hand, which
keeps a map from each value's path to its line and refuses what the loader would silently accept: a key
given twice. Only YAML's safe types are read (no tags that build objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from automations.rules import RuleError, validate_document

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class FileError:
    """One error of a rule file, at its line."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class RuleFileError(ValueError):
    """A rule file that cannot be used; nothing of it is stored."""

    def __init__(self, errors: list[FileError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class _Reader:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: dict[PathKey, int] = {}
        self.errors: list[FileError] = []
        self.constructor = yaml.SafeLoader("")

    def value(self, node: yaml.Node, path: PathKey) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.value(key_node, path + ("<key>",))
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    self.errors.append(FileError(self.name, key_node.start_mark.line + 1, "a key must be text"))
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in out:
                    self.errors.append(FileError(self.name, key_node.start_mark.line + 1, f"key {key!r} given twice"))
                    continue
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self.value(value_node, path + (key,))
                # An error about a value points at the value's line; about the key, at the key's.
                self.lines.setdefault(path + (key,), key_node.start_mark.line + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)

    def line_of(self, path: PathKey) -> int:
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


def parse_rule_text(text: str, name: str = "<rules>") -> list[dict[str, Any]]:
    """The validated definitions of a rule file's text.

    Raises:
        RuleFileError: every error found, each with its line; nothing is returned then.
    """
    reader = _Reader(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise RuleFileError([FileError(name, line, f"not valid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise RuleFileError([FileError(name, 1, f"not valid YAML: {exc}")]) from None
    if node is None:
        raise RuleFileError([FileError(name, 1, "the file is empty: it needs automations: a list of rules")])
    try:
        data = reader.value(node, ())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RuleFileError([FileError(name, mark.line + 1 if mark else 1, f"unreadable value: {exc}")]) from None
    definitions, errors = validate_document(data)
    problems = reader.errors + [_at(reader, name, e) for e in errors]
    if problems:
        raise RuleFileError(sorted(problems, key=lambda e: e.line))
    return definitions


def _at(reader: _Reader, name: str, error: RuleError) -> FileError:
    return FileError(name, reader.line_of(error.path), error.message)


def read_rule_file(path: str | Path) -> list[dict[str, Any]]:
    """``parse_rule_text`` of a file (an unreadable file is a ``RuleFileError`` at line 1)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError([FileError(str(path), 1, f"cannot read the file ({exc.__class__.__name__}: {exc})")]) \
            from None
    return parse_rule_text(text, str(path))


def locate(path: str | Path, errors: list[RuleError]) -> list[FileError]:
    """Errors found after reading (by the database) at their lines of the file they came from."""
    reader = _Reader(str(path))
    try:
        reader.value(yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader), ())
    except (OSError, yaml.YAMLError):
        pass  # the file changed meanwhile: the errors stay, at line 1
    return [_at(reader, str(path), e) for e in errors]
