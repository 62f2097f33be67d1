"""The source of `docs/runtime.svg`, the README's picture of the runtime.

Boxes and arrows are declared below and drawn as plain SVG (no drawing tool to install). After editing, run
`python docs/runtime_diagram.py` to rewrite the SVG; `tests/test_docs.py` fails while the two disagree.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

SVG = Path(__file__).with_name("runtime.svg")
WIDTH, HEIGHT = 860, 520
FONT = "font-family='Helvetica, Arial, sans-serif'"


class Box(NamedTuple):
    x: int
    y: int
    w: int
    h: int
    title: str
    lines: Tuple[str, ...] = ()
    fill: str = "#ffffff"


class Arrow(NamedTuple):
    source: str
    target: str
    label: str = ""
    side: str = "right"  # which side of the source box the arrow leaves from: right, bottom, left, top


# Regions (drawn first, behind the boxes).
REGIONS: Dict[str, Box] = {
    "caller": Box(20, 50, 230, 250, "Your Lambdas and tools", (), "#eef4fb"),
    "core": Box(280, 50, 560, 400, "ggic run: the local Greengrass core", (), "#f4f1fa"),
}

BOXES: Dict[str, Box] = {
    "lambda": Box(40, 90, 190, 100, "user Lambda", ("ml.client('inference')", "invoke_inference_service",
                                                    "greengrasssdk 1.3 to 1.6.1", "Python 2.7, 3.7+")),
    "cli": Box(40, 215, 190, 60, "ggic invoke / status", ("the same SDK call", "from a shell")),
    "ipc": Box(300, 90, 170, 90, "IPC server", ("Greengrass v1 HTTP IPC", "token per function",
                                                "body cap, 127.0.0.1")),
    "queues": Box(300, 210, 170, 80, "function queues", ("in order, bounded", "deadline per request",
                                                         "one answer each")),
    "connector": Box(500, 90, 320, 90, "Image Classification connector", (
        "parameters checked against the schemas", "endpoint: image checks, deadline",
        "supervisor: memory, timeout, heartbeats")),
    "worker": Box(500, 210, 320, 80, "inference worker process", ("decode, resize, NCHW tensor",
                                                                  "MXNet (CPU or GPU) or ONNX Runtime",
                                                                  "answers [p0, p1, ...]"), "#fff8e6"),
    "model": Box(500, 320, 320, 60, "SageMaker model", ("symbol JSON + .params, or model.tar.gz",
                                                        "ggic fetch-model / group deployment")),
    "router": Box(300, 320, 170, 110, "router + MQTT", ("subscriptions", "ML Feedback connector",
                                                              "-> MQTT broker, S3")),
    "mqtt": Box(40, 345, 190, 60, "MQTT broker", ("predictions, feedback", "status messages")),
}

ARROWS: List[Arrow] = [
    Arrow("lambda", "ipc", "invoke"),
    Arrow("cli", "ipc", ""),
    Arrow("ipc", "queues", "", "bottom"),
    Arrow("queues", "connector", "", "right"),
    Arrow("connector", "worker", "pipe", "bottom"),
    Arrow("model", "worker", "loads", "top"),
    Arrow("queues", "router", "publish", "bottom"),
    Arrow("router", "mqtt", "", "left"),
]


def _anchor(box: Box, side: str) -> Tuple[float, float]:
    return {"right": (box.x + box.w, box.y + box.h / 2), "left": (box.x, box.y + box.h / 2),
            "bottom": (box.x + box.w / 2, box.y + box.h), "top": (box.x + box.w / 2, box.y)}[side]


def _entry(box: Box, side: str) -> Tuple[float, float]:
    opposite = {"right": "left", "left": "right", "bottom": "top", "top": "bottom"}[side]
    return _anchor(box, opposite)


def _box(box: Box, region: bool = False) -> List[str]:
    stroke = "#8a8a9a" if region else "#333344"
    parts = [f"<rect x='{box.x}' y='{box.y}' width='{box.w}' height='{box.h}' rx='8' fill='{box.fill}' "
             f"stroke='{stroke}' stroke-width='{1 if region else 1.5}'/>"]
    title_y = box.y + (20 if region else 22)
    size, weight = (15, "bold") if region else (14, "bold")
    parts.append(f"<text x='{box.x + 10}' y='{title_y}' font-size='{size}' font-weight='{weight}' {FONT}>"
                 f"{escape(box.title)}</text>")
    for index, line in enumerate(box.lines):
        parts.append(f"<text x='{box.x + 10}' y='{title_y + 17 * (index + 1)}' font-size='12' fill='#333' {FONT}>"
                     f"{escape(line)}</text>")
    return parts


def render() -> str:
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
             f"viewBox='0 0 {WIDTH} {HEIGHT}'>",
             "<defs><marker id='head' markerWidth='10' markerHeight='8' refX='9' refY='4' orient='auto'>"
             "<path d='M0,0 L10,4 L0,8 z' fill='#333344'/></marker></defs>",
             f"<rect width='{WIDTH}' height='{HEIGHT}' fill='#ffffff'/>",
             f"<text x='20' y='30' font-size='17' font-weight='bold' {FONT}>"
             "ggic: where a request enters, waits, runs and is limited</text>"]
    for region in REGIONS.values():
        parts += _box(region, region=True)
    for box in BOXES.values():
        parts += _box(box)
    for arrow in ARROWS:
        x1, y1 = _anchor(BOXES[arrow.source], arrow.side)
        x2, y2 = _entry(BOXES[arrow.target], arrow.side)
        parts.append(f"<line x1='{x1:g}' y1='{y1:g}' x2='{x2:g}' y2='{y2:g}' stroke='#333344' stroke-width='1.5' "
                     "marker-end='url(#head)'/>")
        if arrow.label:
            parts.append(f"<text x='{(x1 + x2) / 2 + 4:g}' y='{(y1 + y2) / 2 - 6:g}' font-size='11' fill='#555' "
                         f"{FONT}>{escape(arrow.label)}</text>")
    parts.append(f"<text x='20' y='{HEIGHT - 40}' font-size='12' fill='#333' {FONT}>"
                 "Limits: body and queue caps at the IPC server and queues; image checks and the deadline in the "
                 "endpoint;</text>")
    parts.append(f"<text x='20' y='{HEIGHT - 22}' font-size='12' fill='#333' {FONT}>"
                 "memory, timeout and heartbeats by the supervisor, which kills and replaces a worker, never the "
                 "runtime.</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    SVG.write_text(render())
    sys.stdout.write(f"wrote {SVG}\n")
