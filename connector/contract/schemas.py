"""The JSON Schemas under `schemas/` and the validators built from them: one source of the rules for the control
plane (definitions are refused when created) and for the connectors (parameters are checked again at start)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable

from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource

CATALOG_FILE = "connectors.json"
#: The data-only package `connector.contract.schema_files` an installed wheel holds them in.
SCHEMA_PACKAGE_DIR = "schema_files"


class SchemaNotFoundError(FileNotFoundError):
    """The schemas directory is neither installed with the package nor in the source tree."""


def locate_schema_dir(candidates: Iterable[Path]) -> Path:
    """First candidate holding the catalog: the copy installed with the package, else the source tree's."""
    tried = []
    for candidate in candidates:
        if (candidate / CATALOG_FILE).is_file():
            return candidate
        tried.append(str(candidate))
    raise SchemaNotFoundError(f"No {CATALOG_FILE} found in any schema directory: {', '.join(tried)}")


@functools.lru_cache(maxsize=None)
def schema_dir() -> Path:
    """The directory the schemas and the connector catalog are read from."""
    here = Path(__file__).resolve().parent
    return locate_schema_dir([
        here / SCHEMA_PACKAGE_DIR,  # a wheel ships them as package data (setup.py: SCHEMA_PACKAGE)
        here.parents[1] / "schemas",  # a checkout (or editable install), and the Lambda zip (devices/packaging.py)
    ])


@functools.lru_cache(maxsize=None)
def load_json(name: str) -> Any:
    with open(schema_dir() / name, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def registry() -> Registry:
    """All schema files, keyed by their $id, so relative $refs to the shared definitions resolve offline."""
    resources = []
    for path in sorted(schema_dir().glob("*.schema.json")):
        contents = load_json(path.name)
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


_ECMA_DOT = "[^\\n\\r\\u2028\\u2029]"


@functools.lru_cache(maxsize=None)
def ecma_regex(pattern: str) -> re.Pattern:
    """Compile a JSON Schema (ECMA-262) pattern so Python matches what ECMA would.

    Python's ``$`` also matches just before a trailing newline and its ``.`` matches ``\\r``, so ``'10\\n'`` would
    pass ``^(?:[1-9][0-9]*)$`` under plain ``re.search``.  Outside character classes ``$`` becomes ``\\Z`` and
    ``.`` excludes ECMA's line terminators.
    """
    out = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            char = r"\Z"
        elif char == ".":
            char = _ECMA_DOT
        out.append(char)
        i += 1
    return re.compile("".join(out))


def _ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@functools.lru_cache(maxsize=None)
def validator(schema_file: str) -> Draft202012Validator:
    return _Validator(load_json(schema_file), registry=registry())


