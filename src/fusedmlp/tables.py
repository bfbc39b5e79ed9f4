"""Tables as CSV and Markdown, written atomically."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from .io import atomic_path, write_text


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def to_markdown(df: pd.DataFrame, title: str | None = None) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return (f"# {title}\n\n" if title else "") + "\n".join([head, sep, *body]) + "\n"


def write_table(rows: Sequence[dict] | pd.DataFrame, csv_path=None, markdown_path=None,
                title: str | None = None) -> pd.DataFrame:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            df.to_csv(tmp, index=False)
    if markdown_path is not None:
        write_text(markdown_path, to_markdown(df, title))
    return df
