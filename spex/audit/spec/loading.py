"""Reading a spec: YAML (a key given twice is an error), subjects from JSONL files, then validation.

:func:`load_spec` is the entry for a file and :func:`validate_spec` the entry for a mapping; both
raise a :class:`SpecError` of one line (see :mod:`spex.audit.spec.errors`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spex.audit.spec.errors import SpecError, one_line
from spex.audit.spec.schema import AUDIT_SPEC, SPEC_TYPES, AuditSpec
from spex.lenses import registry
from spex.lenses.spec_files import read_jsonl


def validate_spec(data: Any, *, base_dir: Path | None = None) -> AuditSpec:
    """Validate a spec given as a mapping (YAML already parsed); relative files resolve against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise SpecError(
            f"the spec must be a YAML mapping of fields (model, lens, subjects, ...); got {type(data).__name__}; "
            f"fix: start the file with `model: <uri>`",
            field="spec",
        )
    data = dict(data)
    data["subjects"] = _expand_subjects(data.get("subjects"), base_dir)
    try:
        return AUDIT_SPEC.validate_python(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise _lens_error(data) from None
        # Every other error is inside the lens's spec type, and its location starts with the lens tag.
        raise one_line(exc, SPEC_TYPES[data["lens"]], skip=1) from None


def _lens_error(data: Mapping[str, Any]) -> SpecError:
    names = registry.names()
    if "lens" not in data:
        return SpecError(f"spec field `lens` is missing; fix: use one of: {', '.join(names)}", field="lens")
    close = difflib.get_close_matches(str(data["lens"]), names, n=1)
    return SpecError(f"spec field `lens`: unknown lens {data['lens']!r}; fix: use one of: {', '.join(names)}"
                     + (f" (did you mean {close[0]}?)" if close else ""), field="lens")


def _expand_subjects(value: Any, base_dir: Path | None) -> Any:
    """``subjects: {file: x.jsonl}`` or ``subjects: x.jsonl`` -> the list of rows in that file."""
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
            return value
        if not isinstance(value, list):
            raise SpecError(f"spec field `subjects`: expected a list of subjects or {{file: path.jsonl}}, got "
                            f"{type(value).__name__}; fix: list the subjects inline", field="subjects")
        return [dict(s, id=str(s.get("id", f"s{i + 1}"))) if isinstance(s, Mapping) else s for i, s in enumerate(value)]
    path = Path(str(file)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return read_jsonl(path, field="subjects.file", default_id=True)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line


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
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"spec file {path}{where}: invalid YAML ({problem}); fix: check the indentation and quoting "
                        f"there", field="spec") from None
    if data is None:
        raise SpecError(f"spec file {path} is empty; fix: write at least model, lens and subjects", field="spec")
    return validate_spec(data, base_dir=path.parent)
