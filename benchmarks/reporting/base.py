"""The results folder as the report reads it, and the Markdown helpers every section shares."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

METHOD_NAMES = {
    "ht2": "HT-2",
    "tucker2": "Tucker-2",
    "cp": "CP",
    "svd": "spatial SVD",
    "channels": "channel pruning",
}
NET_NAMES = {"cifar10_resnet20": "ResNet-20", "cifar10_resnet56": "ResNet-56"}


@dataclass(frozen=True)
class Section:
    """One `## title` of the report with the Markdown below it."""

    title: str
    body: str

    def text(self) -> str:
        blocks = [wrap(block) for block in self.body.strip().split("\n\n")]
        return f"## {self.title}\n\n" + "\n\n".join(blocks) + "\n"


def wrap(block: str) -> str:
    """A prose paragraph filled to 100 columns; tables, code and lists are left as they are."""
    if block.startswith(("|", "```", "- ", "#")):
        return block
    return textwrap.fill(block, width=100, break_long_words=False, break_on_hyphens=False)


class Results:
    """Read-only access to a results folder; a file that is missing reads as None, so a section
    whose JSON is absent is left out instead of failing."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def json(self, name: str) -> Any:
        path = self.root / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def jsonl(self, name: str) -> list[dict[str, Any]] | None:
        path = self.root / name
        if not path.is_file():
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def names(self, pattern: str) -> list[str]:
        """The files matching a glob, relative to the folder, sorted (for a stable report)."""
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.glob(pattern))


def target_cell(row: dict[str, Any]) -> str:
    """A paper-table row's target: '3.8x' (fewer parameters), '1.3x faster' for a speed row,
    '-' for the base."""
    if row["pipeline"] == "base":
        return "-"
    return f"{row['target']:g}x" + (" faster" if row["pipeline"] == "speed" else "")


EPOCH0_NOTE = (
    "Rows whose JSON has an epoch-0 top-1 below 'before' ran before `ht2 finetune` kept a "
    "model's own BatchNorm statistics when held-out images prefer them, and started from "
    "re-estimated ones; training steps normalise by each batch's own statistics and every "
    "epoch reseeds, so only that epoch-0 figure is affected, not 'after'."
)


TABLE_BATCH = 128  # the paper table's fine-tuning batch; rows run with another are apart

Variant = tuple[float | None, int | None, float | None]
TABLE_OWN: Variant = (None, None, None)  # the variant of rows run with the table's own settings


def variant_of(row: dict[str, Any]) -> Variant:
    """The fine-tune settings a paper-table row ran with apart from the table's own: its peak
    learning rate (None: the recipe's), batch size (None: TABLE_BATCH) and weight average decay
    (None: no average kept)."""
    return row.get("lr"), row.get("batch_size"), row.get("ema")


def fine_tune_of(row: dict[str, Any]) -> tuple[str, int, Variant]:
    """What makes two paper-table rows comparable: the net, the epochs and the variant."""
    return row["net"], row["epochs"], variant_of(row)


def variant_order(variant: Variant) -> tuple:
    """The table's own settings first, then by learning rate, batch size and average."""
    lr, batch, ema = variant
    return lr is not None, lr or 0.0, batch is not None, batch or 0, ema is not None, ema or 0.0


def variant_phrase(variant: Variant) -> str:
    """How a table's heading names settings of its own ("" for the table's)."""
    lr, batch, ema = variant
    lr_part = "" if lr is None else f", peak learning rate {lr:g} (not the recipe's)"
    batch_part = "" if batch is None else f", batch {batch} (not {TABLE_BATCH})"
    return lr_part + batch_part + ("" if ema is None else f", weight average kept (ema {ema:g})")


def variant_flags(variant: Variant) -> str:
    """The paper_table.py flags that run a variant (" --lr 0.003 --batch-size 32")."""
    lr, batch, ema = variant
    flags = ("" if lr is None else f" --lr {lr:g}") + (
        "" if batch is None else f" --batch-size {batch}"
    )
    return flags + ("" if ema is None else f" --ema {ema:g}")


def model_key(row: dict[str, Any]) -> str:
    """A paper-table row's key without its variant: rows that differ only in how they were
    fine-tuned share one compressed model, and so one timing."""
    return f"{row['net']}/{row['pipeline']}/{row['method']}/{row['target']:g}x/e{row['epochs']}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: str = "") -> str:
    """A Markdown table; `right` holds one letter per column, 'r' for right-aligned."""
    align = ["---:" if right[i : i + 1] == "r" else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    """`value` with `digits` decimals, halves rounded up as a person would round the printed
    figure ('-' for None); sign adds '+' to positive numbers."""
    if value is None:
        return "-"
    exact = Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return f"{exact:+.{digits}f}" if sign else f"{exact:.{digits}f}"


def times(value: float | None, digits: int = 2) -> str:
    """A ratio as '1.53x' ('-' for None)."""
    return "-" if value is None else f"{num(value, digits)}x"


def grouped(value: float, digits: int = 0) -> str:
    """A number with thousands separators: 269,722 or 1,234.5."""
    return f"{value:,.{digits}f}"


def span(values: Iterable[float], digits: int = 2) -> str:
    """'a-b' for the smallest and largest of `values` (one number when they agree)."""
    values = list(values)
    low, high = num(min(values), digits), num(max(values), digits)
    return low if low == high else f"{low}-{high}"


def load(value: Sequence[float]) -> str:
    """A before/after load-average pair as '0.32-0.85'."""
    return "-".join(f"{v:g}" for v in value)


def net_name(net: str) -> str:
    return NET_NAMES.get(net, net)


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def command(*lines: str) -> str:
    """A bash code block."""
    return "```bash\n" + "\n".join(lines) + "\n```"
