"""Experimental reference tables: CSV files with a '#' comment header that names the source.

The tables are published measurements shipped under ``resources/experiment/``; the loader checks
that the columns a consumer needs are present and numeric, so a wrong file fails early with the
file and the column named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .io import InputError

ELASTIC_COLUMNS = ("T_K", "C11_GPa", "C12_GPa", "C13_GPa", "C33_GPa", "C44_GPa")
LATTICE_COLUMNS = ("T_K", "a_A", "c_A")
DIFFUSION_COLUMNS = ("T_K", "D_1e-9_m2_s", "uncertainty_1e-9_m2_s")


def citation(path) -> str:
    """The comment header of a table (its source and units)."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    return " ".join(lines)


def load_table(path, columns: Sequence[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "experimental table does not exist")
    try:
        df = pd.read_csv(path, comment="#")
    except Exception as exc:
        raise InputError(path, None, f"not a readable CSV table ({exc})") from exc
    if df.empty:
        raise InputError(path, None, f"no data rows; expected columns {list(columns)}")
    line = _first_data_line(path)  # file line of data row 0, for messages
    for col in columns:
        if col not in df.columns:
            raise InputError(path, col, f"column missing; expected columns {list(columns)}, "
                                        f"found {list(df.columns)}")
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any() or not np.all(np.isfinite(values)):
            row = int(np.nonzero(values.isna().to_numpy() | ~np.isfinite(values.to_numpy()))[0][0])
            raise InputError(path, col, f"line {line + row}: expected a finite number, got {df[col].iloc[row]!r}")
        df[col] = values.astype(float)
    if "T_K" in columns:
        if np.any(df["T_K"] <= 0):
            raise InputError(path, "T_K", "temperatures must be positive (K)")
        # lookups interpolate along T: a table out of order, or with a temperature twice, would
        # silently give another temperature's values
        t = df["T_K"].to_numpy()
        bad = np.nonzero(np.diff(t) <= 0)[0]
        if len(bad):
            i = int(bad[0])
            raise InputError(path, "T_K", f"temperatures must be strictly increasing: line {line + i} has "
                                          f"{t[i]:g} K, line {line + i + 1} {t[i + 1]:g} K")
    return df


def _first_data_line(path: Path) -> int:
    """1-based file line of the first data row: after the comment header and the column names."""
    lines = path.read_text().splitlines()
    k = 0
    while k < len(lines) and (lines[k].startswith("#") or not lines[k].strip()):
        k += 1
    return k + 2


def at_temperature(table: pd.DataFrame, path, column: str, t: float, requested_by: str) -> float:
    """``column`` of ``table`` (read from ``path``) linearly interpolated at ``t`` K; a temperature
    outside the table is an error naming the file and the setting that asked for it."""
    lo, hi = table["T_K"].min(), table["T_K"].max()
    if not lo <= t <= hi:
        raise InputError(path, "T_K", f"{t:g} K ({requested_by}) is outside the table ({lo:g}-{hi:g} K)")
    return float(np.interp(t, table["T_K"], table[column]))


def expansion_at(table: pd.DataFrame, path, column: str, t: float, requested_by: str) -> float:
    """d ln x/dT (1/K) of ``column`` x at ``t`` K: the table's derivative (``np.gradient``:
    second-order differences between its rows, first-order at its ends) linearly interpolated,
    over the value there. A derivative feels every row beside ``t``: near a suspect row it is
    worse than the interpolated value itself."""
    x = at_temperature(table, path, column, t, requested_by)
    if len(table) < 2:
        raise InputError(path, "T_K", f"one row: a derivative in temperature ({requested_by}) needs two")
    slope = np.gradient(table[column].to_numpy(float), table["T_K"].to_numpy(float))
    return float(np.interp(t, table["T_K"], slope)) / x


def hcp_expansion_at(table: pd.DataFrame, path, t: float, requested_by: str) -> np.ndarray:
    """The hcp lattice's linear strain rates at ``t`` K as a Voigt 6-vector (1/K): d ln a/dT on
    xx and yy, d ln c/dT on zz (``expansion_at``)."""
    alpha_a, alpha_c = (expansion_at(table, path, col, t, requested_by) for col in ("a_A", "c_A"))
    return np.array([alpha_a, alpha_a, alpha_c, 0.0, 0.0, 0.0])


def elastic_constants(path) -> pd.DataFrame:
    return load_table(path, ELASTIC_COLUMNS)


def lattice_constants(path) -> pd.DataFrame:
    return load_table(path, LATTICE_COLUMNS)


def diffusion(path) -> pd.DataFrame:
    return load_table(path, DIFFUSION_COLUMNS)
