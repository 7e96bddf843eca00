"""Reading a spec: YAML (a key given twice is an error), subjects from JSONL files, then validation.

:func:`load_spec` is the entry for a file and :func:`validate_spec` the entry for a mapping; both
raise a :class:`SpecError` of one line (see :mod:`spex.audit.spec.errors`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spex.audit.spec.errors import SpecError, one_line
from spex.audit.spec.schema import AUDIT_SPEC, SPEC_TYPES, AuditSpec
from spex.lenses import registry
from spex.lenses.spec_files import not_a_regular_file, read_jsonl_lines


def validate_spec(data: Any, *, base_dir: Path | None = None) -> AuditSpec:
    """Validate a spec given as a mapping (YAML already parsed); relative files resolve against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise SpecError(
            f"the spec must be a YAML mapping of fields (model, lens, subjects, ...); got {type(data).__name__}; "
            f"fix: start the file with `model: <uri>`",
            field="spec",
        )
    data = dict(data)
    data["subjects"], source = _expand_subjects(data.get("subjects"), base_dir)
    try:
        _refuse_nul(data)
        try:
            return AUDIT_SPEC.validate_python(data, context={"base_dir": base_dir})
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
                raise _lens_error(data) from None
            # Every other error is inside the lens's spec type, and its location starts with the lens tag.
            raise one_line(exc, SPEC_TYPES[data["lens"]], skip=1) from None
    except SpecError as exc:
        raise _at_source_line(exc, source) from None


def _refuse_nul(value: Any, where: str = "") -> None:
    """A NUL character in any string of the spec is refused here, naming its field: the metadata DB
    (Postgres text) cannot store one, and finding that out after the model loaded wastes the run."""
    if isinstance(value, str):
        if "\x00" in value:
            field = where or "spec"
            raise SpecError(f"spec field `{field}`: contains a NUL character (\\x00), which the metadata DB cannot "
                            f"store; fix: remove it", field=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_nul(key, where)
            _refuse_nul(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_nul(item, f"{where}[{i}]")


def _at_source_line(exc: SpecError, source: tuple[Path, list[int]] | None) -> SpecError:
    """An error about ``subjects[k]...`` of subjects read from a file names the file and its line."""
    match = re.match(r"subjects\[(\d+)\]", exc.field or "")
    if source is None or match is None or int(match.group(1)) >= len(source[1]):
        return exc
    path, lines = source
    shown = f"`{exc.field}`"
    message = str(exc).replace(shown, f"{shown} ({path} line {lines[int(match.group(1))]})", 1)
    return SpecError(message, field=exc.field)


def _lens_error(data: Mapping[str, Any]) -> SpecError:
    names = registry.names()
    if "lens" not in data:
        return SpecError(f"spec field `lens` is missing; fix: use one of: {', '.join(names)}", field="lens")
    close = difflib.get_close_matches(str(data["lens"]), names, n=1)
    return SpecError(f"spec field `lens`: unknown lens {data['lens']!r}; fix: use one of: {', '.join(names)}"
                     + (f" (did you mean {close[0]}?)" if close else ""), field="lens")


def _expand_subjects(value: Any, base_dir: Path | None) -> tuple[Any, tuple[Path, list[int]] | None]:
    """``subjects: {file: x.jsonl}`` or ``subjects: x.jsonl`` -> (the list of rows in that file, (the
    file, each row's line number)); inline subjects -> (the list, None)."""
    file = None
    if isinstance(value, str):
        file = value
    elif isinstance(value, Mapping) and set(value) == {"file"}:
        file = value["file"]
    elif isinstance(value, Mapping):
        raise SpecError("spec field `subjects`: a mapping must be exactly {file: <path.jsonl>}; fix: list the subjects "
                        "inline or write subjects: {file: subjects.jsonl}", field="subjects")
    if file is None:
        if value is None:
            return value, None
        if not isinstance(value, list):
            raise SpecError(f"spec field `subjects`: expected a list of subjects or {{file: path.jsonl}}, got "
                            f"{type(value).__name__}; fix: list the subjects inline", field="subjects")
        return [dict(s, id=str(s.get("id", f"s{i + 1}"))) if isinstance(s, Mapping) else s
                for i, s in enumerate(value)], None
    path = Path(str(file)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    rows = read_jsonl_lines(path, field="subjects.file", default_id=True)
    return [row for _, row in rows], (path, [number for number, _ in rows])


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


MAX_EXPANDED_NODES = 1_000_000
"""The most values a spec may hold once its YAML aliases are expanded. A real spec is far below it
(a 100,000-word prompt is one value); nine nested aliases of nine ("billion laughs") are 9^9."""


class _AliasBomb(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line, self.reason = line, reason


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Any) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_EXPANDED_NODES` values, or refer to
    themselves, before anything is built from it: PyYAML shares an aliased node, but everything
    after it (validation, JSON, digests) walks the expanded tree. Iterative, memoised per node, so a
    deep or shared graph costs its number of distinct nodes."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_EXPANDED_NODES:
                raise _AliasBomb(node.start_mark.line + 1, f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _AliasBomb(node.start_mark.line + 1, "an alias refers to the value that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _unique_key_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, except that a key given twice in one mapping is an error: a spec that
        says ``budget:`` twice would otherwise run with whichever came last."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key_node, _ in node.value:
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # merge keys (<<) may override by design
                    key = self.construct_object(key_node, deep=deep)
                    if isinstance(key, (str, int, float, bool)) or key is None:
                        if key in seen:
                            raise _DuplicateKey(key, key_node.start_mark.line + 1)
                        seen.add(key)
            return super().construct_mapping(node, deep=deep)

        def construct_document(self, node: Any) -> Any:
            _check_expansion(node)
            return super().construct_document(node)

    return Loader


class _LazyLoader:
    """Build the loader class on first use (this module imports PyYAML lazily)."""

    _cls: type | None = None

    def __call__(self, stream: Any) -> Any:
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _unique_key_loader()
        return _LazyLoader._cls(stream)


_UniqueKeyLoader = _LazyLoader()


def load_spec(source: str | Path | Mapping[str, Any]) -> AuditSpec:
    """Read and validate a spec from a YAML file (or an already parsed mapping)."""
    if isinstance(source, Mapping):
        return validate_spec(source)
    import yaml

    path = Path(source).expanduser()
    kind = not_a_regular_file(path)
    if kind is not None and kind != "a folder":  # a folder: reading says "Is a directory"
        raise SpecError(f"spec file {path} is {kind}, not a regular file; fix: pass the path of a YAML audit spec",
                        field="spec")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist; fix: pass the path of a YAML audit spec", field="spec") from None
    except OSError as exc:
        raise SpecError(f"cannot read spec file {path}: {exc.strerror or exc}; fix: pass the path of a readable YAML "
                        f"audit spec", field="spec") from None
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path} is not UTF-8 text; fix: save it as UTF-8 YAML", field="spec") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader that refuses duplicate keys)
    except _DuplicateKey as exc:
        raise SpecError(f"spec file {path} line {exc.line}: spec field `{exc.key}` is given twice (YAML would keep "
                        f"only the last one silently); fix: keep one `{exc.key}:`", field=str(exc.key)) from None
    except _AliasBomb as exc:
        raise SpecError(f"spec file {path} line {exc.line}: refused: {exc.reason} (a YAML alias bomb?); fix: write "
                        f"the values out, or use fewer aliases", field="spec") from None
    except RecursionError:
        raise SpecError(f"spec file {path}: its values are nested too deeply to read; fix: write a flat spec (a "
                        f"mapping of fields, a list of subjects)", field="spec") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"spec file {path}{where}: invalid YAML ({problem}); fix: check the indentation and quoting "
                        f"there", field="spec") from None
    if data is None:
        raise SpecError(f"spec file {path} is empty; fix: write at least model, lens and subjects", field="spec")
    return validate_spec(data, base_dir=path.parent)
