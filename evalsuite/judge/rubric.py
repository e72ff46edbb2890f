"""Judge rubrics as data files: load, validate, render prompts, validate replies.

A rubric is a YAML file (see rubrics/tinystories_gpt_eval.yaml). Users add rubrics by writing a
new file; no code changes. Loading is strict: unknown keys, missing keys, a reply schema that
disagrees with the declared dimensions, or a template without its placeholders are `UserError`s.

Replies are validated twice: against the rubric's JSON schema (jsonschema), and against the
declared dimensions (integer in [min, max], category among the options), so a lax schema can
never let an out-of-range grade through as a number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from corpora.errors import UserError

RUBRICS_DIR = Path(__file__).resolve().parents[2] / "rubrics"
PLACEHOLDERS = ("beginning", "completion")
_PLACEHOLDER_RE = re.compile(r"\{(beginning|completion)\}")

_TOP_KEYS = {
    "id", "version", "title", "source", "notes", "system", "user", "dimensions", "categorical",
    "text_fields", "reply_schema", "reply_schema_file",
}
_REQUIRED_TOP = {"id", "version", "system", "user", "dimensions"}
_DIM_KEYS = {"name", "description", "min", "max"}
_CAT_KEYS = {"name", "description", "options", "ordinal"}


@dataclass(frozen=True)
class Dimension:
    """A numeric grade with an inclusive integer range."""

    name: str
    min: int
    max: int
    description: str = ""


@dataclass(frozen=True)
class Categorical:
    """A categorical answer (e.g. the age group); `options` maps code -> label, in order."""

    name: str
    options: dict[str, str]
    ordinal: bool = False
    description: str = ""

    def index(self, code: str) -> int:
        """1-based position of a code among the options (A=1 ... F=6 for the age groups)."""
        return list(self.options).index(code) + 1


@dataclass(frozen=True)
class Rubric:
    id: str
    version: str
    system: str
    user: str
    dimensions: tuple[Dimension, ...]
    categorical: tuple[Categorical, ...]
    reply_schema: dict[str, Any]
    text_fields: tuple[str, ...] = ()
    title: str = ""
    source: str = ""
    notes: str = ""
    path: str = ""
    _validator: Any = field(default=None, repr=False, compare=False)

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def dimension(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise UserError(f"rubric {self.id} has no dimension {name!r} (has: {', '.join(self.dimension_names)})")

    def render(self, beginning: str, completion: str) -> list[dict[str, str]]:
        """Chat messages for one story: the beginning and the completion joined by the template."""
        values = {"beginning": beginning, "completion": completion}
        # One pass, so a completion that itself contains "{beginning}" is never substituted again.
        user = _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], self.user)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def json_object_instruction(self) -> str:
        """Appended to the system message when the server only supports json_object mode."""
        return (
            "\nReply with a single JSON object, and nothing else, that matches this JSON schema:\n"
            + json.dumps(self.reply_schema, indent=None, sort_keys=True)
        )

    def validate_reply(self, text: str) -> dict[str, Any]:
        """Parse and check a reply. Returns the parsed object; raises `ReplyInvalid` with the reason."""
        obj = parse_json_reply(text)
        errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(root)"
            raise ReplyInvalid(f"schema: {where}: {first.message}")
        for dim in self.dimensions:
            value = obj.get(dim.name)
            # bool is an int subclass in Python; a grade of `true` is not a grade.
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                    obj[dim.name] = value
                else:
                    raise ReplyInvalid(f"{dim.name}: not an integer: {value!r}")
            if not dim.min <= value <= dim.max:
                raise ReplyInvalid(f"{dim.name}: {value} outside [{dim.min}, {dim.max}]")
        for cat in self.categorical:
            value = obj.get(cat.name)
            if value not in cat.options:
                raise ReplyInvalid(f"{cat.name}: {value!r} not one of {', '.join(cat.options)}")
        return obj

    def identity(self) -> str:
        return f"{self.id}@{self.version}"


class ReplyInvalid(ValueError):
    """A judge reply that is not valid JSON, breaks the schema, or has a grade out of range."""


def parse_json_reply(text: str) -> Any:
    """json.loads, tolerating one surrounding ``` fence (some servers add it in json_object mode)."""
    stripped = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    if fence:
        stripped = fence.group(1)
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as err:
        raise ReplyInvalid(f"malformed JSON: {err.msg} at char {err.pos}") from None


def find_rubric(name_or_path: str | Path) -> Path:
    """A rubric path: an existing file, or a name looked up as rubrics/<name>.yaml."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (RUBRICS_DIR / f"{name_or_path}.yaml", RUBRICS_DIR / f"{str(name_or_path).replace('-', '_')}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in RUBRICS_DIR.glob("*.yaml")) if RUBRICS_DIR.is_dir() else []
    raise UserError(f"rubric not found: {name_or_path} (a YAML file path, or one of: {', '.join(known) or 'none'})")


def load_rubric(name_or_path: str | Path) -> Rubric:
    """Load and validate a rubric file (strict: unknown keys are errors)."""
    path = find_rubric(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserError(f"rubric {path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise UserError(f"rubric {path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"rubric {path}: expected a mapping at the top level")
    _check_keys(data, _TOP_KEYS, _REQUIRED_TOP, f"rubric {path}")
    where = f"rubric {path}"

    for key in ("id", "system", "user"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise UserError(f"{where}: '{key}' must be a non-empty string")
    if not isinstance(data["version"], (int, str)) or isinstance(data["version"], bool):
        raise UserError(f"{where}: 'version' must be an integer or a string")
    for name in PLACEHOLDERS:
        if data["user"].count("{" + name + "}") != 1:
            raise UserError(f"{where}: the user template must contain {{{name}}} exactly once")

    dimensions = tuple(_load_dimension(d, where) for d in _as_list(data["dimensions"], "dimensions", where))
    categorical = tuple(_load_categorical(c, where) for c in _as_list(data.get("categorical", []), "categorical", where))
    names = [d.name for d in dimensions] + [c.name for c in categorical]
    if not dimensions:
        raise UserError(f"{where}: at least one dimension is required")
    if len(set(names)) != len(names):
        raise UserError(f"{where}: duplicate dimension/categorical names: {names}")
    text_fields = tuple(_as_list(data.get("text_fields", []), "text_fields", where))

    schema = _load_schema(data, path, where)
    _check_schema_matches(schema, dimensions, categorical, text_fields, where)
    return Rubric(
        id=data["id"].strip(),
        version=str(data["version"]),
        system=data["system"],
        user=data["user"],
        dimensions=dimensions,
        categorical=categorical,
        reply_schema=schema,
        text_fields=text_fields,
        title=str(data.get("title", "")),
        source=str(data.get("source", "")),
        notes=str(data.get("notes", "")),
        path=str(path),
        _validator=Draft202012Validator(schema),
    )


def _as_list(value: Any, key: str, where: str) -> list:
    if not isinstance(value, list):
        raise UserError(f"{where}: '{key}' must be a list")
    return value


def _check_keys(data: dict, allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(allowed)})")
    missing = sorted(required - set(data))
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}")


def _load_dimension(d: Any, where: str) -> Dimension:
    if not isinstance(d, dict):
        raise UserError(f"{where}: each dimension must be a mapping, got {d!r}")
    _check_keys(d, _DIM_KEYS, {"name", "min", "max"}, f"{where}: dimension {d.get('name', '?')}")
    lo, hi = d["min"], d["max"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or lo >= hi:
        raise UserError(f"{where}: dimension {d['name']}: min/max must be integers with min < max")
    return Dimension(name=str(d["name"]), min=lo, max=hi, description=str(d.get("description", "")))


def _load_categorical(c: Any, where: str) -> Categorical:
    if not isinstance(c, dict):
        raise UserError(f"{where}: each categorical entry must be a mapping, got {c!r}")
    _check_keys(c, _CAT_KEYS, {"name", "options"}, f"{where}: categorical {c.get('name', '?')}")
    options = c["options"]
    if not isinstance(options, dict) or not options:
        raise UserError(f"{where}: categorical {c['name']}: 'options' must be a non-empty mapping code -> label")
    return Categorical(
        name=str(c["name"]),
        options={str(k): str(v) for k, v in options.items()},
        ordinal=bool(c.get("ordinal", False)),
        description=str(c.get("description", "")),
    )


def _load_schema(data: dict, path: Path, where: str) -> dict:
    if ("reply_schema" in data) == ("reply_schema_file" in data):
        raise UserError(f"{where}: give exactly one of 'reply_schema' (inline) or 'reply_schema_file'")
    if "reply_schema" in data:
        schema = data["reply_schema"]
    else:
        schema_path = (path.parent / data["reply_schema_file"]).resolve()
        if not schema_path.is_file():
            raise UserError(f"{where}: reply_schema_file not found: {schema_path}")
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: {schema_path} is not valid JSON: {err}") from None
    if not isinstance(schema, dict):
        raise UserError(f"{where}: the reply schema must be a JSON object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        raise UserError(f"{where}: invalid JSON schema: {err.message}") from None
    return schema


def _check_schema_matches(
    schema: dict, dims: tuple[Dimension, ...], cats: tuple[Categorical, ...], text_fields: tuple[str, ...], where: str
) -> None:
    """The schema must ask for exactly what the rubric declares, with the same ranges and options."""
    if schema.get("type") != "object":
        raise UserError(f"{where}: reply schema must have type 'object'")
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    for name in [d.name for d in dims] + [c.name for c in cats] + list(text_fields):
        if name not in props:
            raise UserError(f"{where}: reply schema has no property {name!r}")
        if name not in required:
            raise UserError(f"{where}: reply schema must list {name!r} in 'required'")
    for dim in dims:
        prop = props[dim.name]
        if prop.get("type") != "integer":
            raise UserError(f"{where}: schema property {dim.name!r} must have type 'integer'")
        if prop.get("minimum") != dim.min or prop.get("maximum") != dim.max:
            raise UserError(
                f"{where}: schema range for {dim.name!r} ({prop.get('minimum')}..{prop.get('maximum')}) "
                f"differs from the rubric ({dim.min}..{dim.max})"
            )
    for cat in cats:
        if list(props[cat.name].get("enum", [])) != list(cat.options):
            raise UserError(f"{where}: schema enum for {cat.name!r} must be {list(cat.options)}")
