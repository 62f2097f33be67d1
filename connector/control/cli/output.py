"""`--output json|text|table`: a response printed the way the AWS CLI prints it.

json: the response indented by 4, as `aws` prints it. text: tab-separated lines for grep, cut and awk; each object's
scalar values in the order of their sorted keys, a nested value on lines of its own that start with its key in
upper case, and a list of objects as one line per object over the union of their scalar keys. table: the `+|-`
boxes, titled with the operation's name, each nested object or list a section indented by one more `|`, a list of
objects one row per object under the sorted scalar keys; a table wider than the terminal (80 columns when stdout is
not one) shows each single-row section as key/value rows instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, TextIO, Tuple

FORMATS = ("json", "text", "table")
CELL_PADDING = 4        # two spaces each side of the widest cell of a column
LEFT_PADDING = 2        # before a row's value
DEFAULT_TERMINAL_WIDTH = 80


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=FORMATS, default="json",
                        help="json (default), text (tab-separated) or table, as the AWS CLI prints them")


def emit(args: argparse.Namespace, operation: str, response: Any, stream: Optional[TextIO] = None) -> None:
    """Print `response` (the API operation `operation`'s answer) in the format `--output` asks for."""
    stream = stream or sys.stdout
    chosen = getattr(args, "output", "json")
    if chosen == "text":
        stream.write(format_text(response))
    elif chosen == "table":
        stream.write(format_table(operation, response, terminal_width()))
    else:
        stream.write(json.dumps(response, indent=4) + "\n")


def silence_stdout() -> None:
    """After a BrokenPipeError: whatever is still printed (or flushed at exit) goes to /dev/null, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _cell(value: Any) -> str:
    """A scalar as the AWS CLI writes it: Python's str (True, None), so booleans read True/False."""
    return str(value)


# --- text ----------------------------------------------------------------------------------------------------

def format_text(response: Any) -> str:
    lines: List[str] = []
    _text(response, None, None, lines)
    return "".join(line + "\n" for line in lines)


def _text(value: Any, key: Optional[str], columns: Optional[List[str]], lines: List[str]) -> None:
    if isinstance(value, dict):
        _text_object(value, key, columns, lines)
    elif isinstance(value, list):
        _text_list(value, key, lines)
    else:
        lines.append(_cell(value))


def _text_object(value: Dict[str, Any], key: Optional[str], columns: Optional[List[str]],
                 lines: List[str]) -> None:
    if columns is None:
        columns = sorted(k for k, v in value.items() if _scalar(v))
    cells = [_cell(value.get(column, "")) for column in columns]
    if cells:
        lines.append("\t".join(([key.upper()] if key is not None else []) + cells))
    for nested in sorted(set(value) - set(columns)):
        _text(value[nested], nested, None, lines)


def _text_list(values: List[Any], key: Optional[str], lines: List[str]) -> None:
    if not values:
        return
    if any(isinstance(v, dict) for v in values):
        columns = sorted({k for v in values if isinstance(v, dict) for k, item in v.items() if _scalar(item)})
        for item in values:
            _text(item, key, columns, lines)
        return
    scalars = [v for v in values if _scalar(v)]
    if scalars:
        if key is None:
            lines.append("\t".join(_cell(v) for v in scalars))
        else:
            lines.extend(f"{key.upper()}\t{_cell(v)}" for v in scalars)
    for item in values:
        if not _scalar(item):
            _text(item, key, None, lines)


# --- table ---------------------------------------------------------------------------------------------------

@dataclass
class _Section:
    title: str
    indent: int
    headers: List[str] = field(default_factory=list)
    rows: List[List[str]] = field(default_factory=list)

    def widest(self) -> List[int]:
        """Each column's widest cell (header or value)."""
        widths: List[int] = []
        for row in ([self.headers] if self.headers else []) + self.rows:
            for index, cell in enumerate(row):
                if index == len(widths):
                    widths.append(0)
                widths[index] = max(widths[index], len(cell))
        return widths

    def width(self) -> int:
        """The width this section needs, borders and indentation included."""
        columns = sum(w + CELL_PADDING for w in self.widest())
        return max(len(self.title), columns) + 2 + 2 * self.indent


def format_table(operation: str, response: Any, width_limit: int = DEFAULT_TERMINAL_WIDTH) -> str:
    sections: List[_Section] = []
    if not _table(operation, response, 0, sections):
        return ""
    total = max(s.width() for s in sections)
    if total > width_limit:  # too wide: single-row sections become key/value rows
        for section in sections:
            if section.headers and len(section.rows) == 1:
                section.rows = [[h, v] for h, v in zip(section.headers, section.rows[0])]
                section.headers = []
        total = max(s.width() for s in sections)
    lines = ["-" * total]
    for section in sections:
        lines.extend(_render(section, total))
    return "".join(line + "\n" for line in lines)


def _table(title: Optional[str], value: Any, indent: int, sections: List[_Section]) -> bool:
    """Add the sections of `value` (titled `title`; None continues the current one). False when it is empty."""
    if value in (None, "", [], {}):
        return False
    if title is not None:
        sections.append(_Section(title, indent))
    current = sections[-1]
    if isinstance(value, list):
        if isinstance(value[0], dict):
            _table_from_objects(title or "", value, indent, sections)
        else:
            for item in value:
                if _scalar(item):
                    current.rows.append([_cell(item)])
                elif all(_scalar(el) for el in item):
                    current.rows.append([_cell(el) for el in item])
                else:
                    _table(None, item, indent, sections)
    elif isinstance(value, dict):
        scalars, nested = _split(value)
        if len(scalars) == 1:
            current.rows.append([scalars[0], _cell(value[scalars[0]])])
        elif scalars:
            current.headers = scalars
            current.rows.append([_cell(value[k]) for k in scalars])
        for key in nested:
            _table(key, value[key], indent + 1, sections)
    else:
        current.rows.append([_cell(value)])
    return True


def _table_from_objects(title: str, values: List[Dict[str, Any]], indent: int, sections: List[_Section]) -> None:
    headers, nested = set(), set()
    for item in values:
        scalars, more = _split(item)
        headers.update(scalars)
        nested.update(more)
    columns, deeper = sorted(headers), sorted(nested)
    sections[-1].headers = columns
    for position, item in enumerate(values):
        if position and deeper:  # each object's nested values follow its own row: a section per object
            sections.append(_Section(title, indent, headers=columns))
        sections[-1].rows.append([_cell(item.get(column, "")) for column in columns])
        for key in deeper:
            if key in item:
                _table(key, item[key], indent + 1, sections)


def _split(value: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """(sorted keys of scalar values, sorted keys of nested values)."""
    return sorted(k for k, v in value.items() if _scalar(v)), sorted(k for k, v in value.items() if not _scalar(v))


def _column_widths(widest: List[int], inner: int) -> List[int]:
    """Each column's width with its padding, scaled so that together they fill `inner` characters."""
    wanted = [w + CELL_PADDING for w in widest]
    scale = inner / float(sum(wanted))
    widths = [int(round(w * scale)) for w in wanted]
    excess = sum(widths) - inner
    index = 0
    while excess:  # rounding: take from the first columns, or give to the last ones
        if excess > 0:
            widths[index % len(widths)] -= 1
            excess -= 1
        else:
            widths[-1 - index % len(widths)] += 1
            excess += 1
        index += 1
    return widths


def _render(section: _Section, total: int) -> List[str]:
    inner = total - 2 * section.indent
    bar = "|" * section.indent
    out: List[str] = []
    if section.title:
        out.append(_centered(section.title, inner))
        if not section.headers and not section.rows:
            out.append("+" + "-" * (inner - 2) + "+")
    widest = section.widest()
    if widest:
        widths = _column_widths(widest, inner)
        rule = _rule(widths)
        if section.headers:
            out.append(rule)
            out.append(_cells(section.headers, widths, centre=True))
        if section.rows:
            out.append(rule)
            out.extend(_cells(row, widths, centre=False) for row in section.rows)
            out.append(rule)
    return [f"{bar}{line}{bar}" for line in out]


def _rule(widths: List[int]) -> str:
    """`+-----+---+`: the first column has both edges, the others their right one."""
    return "+" + "-" * (widths[0] - 2) + "+" + "".join("-" * (w - 1) + "+" for w in widths[1:])


def _centered(text: str, width: int) -> str:
    left = width // 2 - len(text) // 2 - 1
    return "|" + " " * left + text + " " * (width - 2 - left - len(text)) + "|"


def _cells(row: List[str], widths: List[int], centre: bool) -> str:
    parts = []
    for index, (text, width) in enumerate(zip(row, widths)):
        room = width - (2 if index == 0 else 1)  # the first cell has two edges
        if centre:
            left = max(width // 2 - len(text) // 2 - 1, 0)
        else:
            left = LEFT_PADDING if room - len(text) >= LEFT_PADDING else 0
        cell = " " * left + text
        parts.append(("|" if index == 0 else "") + cell + " " * max(room - len(cell), 0) + "|")
    return "".join(parts)


def terminal_width() -> int:
    """The terminal's columns when stdout is one, else 80 (what the AWS CLI assumes when it cannot tell)."""
    if not sys.stdout.isatty():
        return DEFAULT_TERMINAL_WIDTH
    return shutil.get_terminal_size((DEFAULT_TERMINAL_WIDTH, 24)).columns
