"""A tabulated pair potential added to a model's energy: the Iterative Boltzmann Inversion
correction (Matin et al., J. Chem. Theory Comput. 2024, doi:10.1021/acs.jctc.3c01051).

The correction is a table of values u_k on the uniform grid r_k = r_min + k h, k = 0 … n − 1,
r_{n−1} = r_c (its own cutoff, at most the network's: the model's graph holds the pairs within
the network's cutoff and no farther). Its energy is

    U_pair = Σ_pairs v(r_ij),    v = S[u − u_{n−1}]  for r_min ≤ r < r_c,  0 beyond,

with S the cubic spline through the shifted values (so v(r_c) = 0 whatever the last entry)
that is natural at r_min (v'' = 0) and clamped at r_c (v' = 0): v is C² inside the table and
v, v' vanish at r_c, so forces are continuous everywhere (v'' jumps at r_c, as for every
cut pair potential with a shifted force). Below r_min v continues linearly with its slope at
r_min, which keeps it C² there (v'' = 0 on both sides). Forces and virials are the exact
derivatives of this interpolated energy (automatic differentiation of ``correction_energy``, as
for every term of ``model.energy``).

The spline's second derivatives are a fixed linear map of the values (the tridiagonal system of
the spline conditions, solved once per grid on the host), so evaluating v costs a matrix–vector
product per call and the table itself is a run-time argument: an IBI iteration changes it
without recompiling the MD.

The run-time form (``runtime_table``, ``runtime_correction_energy``) carries the grid too as
run-time numbers, the spline's second derivatives precomputed, and the arrays padded to a
multiple of ``RUNTIME_KNOTS``: every table of up to that many knots, and the zero correction of
a model without one, is then the same compiled program. The evaluation rules use it for every
model, so a corrected model's MD is the uncorrected models' program (JAX's persistent cache
serves it) instead of a compilation of its own in each of its jobs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import numpy as np

from .graph import Graph, edge_vectors


@dataclasses.dataclass(frozen=True)
class PairCorrectionSettings:
    r_min: float  # Å, first grid point
    cutoff: float  # Å, last grid point, where the correction and its force vanish
    n_points: int  # grid points, r_min and cutoff included

    def __post_init__(self):
        if not (0 <= self.r_min < self.cutoff) or self.n_points < 3:
            raise ValueError(f"pair correction grid: need 0 <= r_min < cutoff and n_points >= 3; got "
                             f"r_min {self.r_min}, cutoff {self.cutoff}, n_points {self.n_points}")

    @property
    def spacing(self) -> float:
        return (self.cutoff - self.r_min) / (self.n_points - 1)

    @property
    def grid(self) -> np.ndarray:
        """The table's distances r_k (Å)."""
        return np.linspace(self.r_min, self.cutoff, self.n_points)


def zero_table(s: PairCorrectionSettings, dtype=jnp.float32) -> dict:
    """The parameters of a correction that changes nothing: ``{"u": zeros (n_points,)}`` (eV)."""
    return {"u": jnp.zeros(s.n_points, dtype)}


@functools.lru_cache(maxsize=None)
def _second_derivative_map(n: int, h: float) -> np.ndarray:
    """K (n × n) with M = K y the spline's second derivatives at the nodes for values y whose
    last entry is 0: natural at the first node (M_0 = 0), clamped (slope 0) at the last."""
    a = np.zeros((n, n))
    rhs = np.zeros((n, n))
    a[0, 0] = 1.0
    for i in range(1, n - 1):
        a[i, i - 1], a[i, i], a[i, i + 1] = 1.0, 4.0, 1.0
        rhs[i, i - 1], rhs[i, i], rhs[i, i + 1] = 6 / h**2, -12 / h**2, 6 / h**2
    # clamped end: M_{n-2} + 2 M_{n-1} = 6/h (0 - (y_{n-1} - y_{n-2})/h)
    a[n - 1, n - 2], a[n - 1, n - 1] = 1.0, 2.0
    rhs[n - 1, n - 2], rhs[n - 1, n - 1] = 6 / h**2, -6 / h**2
    return np.linalg.solve(a, rhs)


def _spline(y, m, r_min, h, cutoff, n, r):
    """v(r) from the shifted values y and second derivatives m at the n nodes r_min + k h (the
    grid numbers may be traced: ``runtime_table``; nodes beyond n are never read)."""
    x = (r - r_min) / h
    k = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, n - 2)
    b = jnp.clip(x, 0.0, n - 1.0) - k  # position within the interval [r_k, r_k+1], 0..1
    a = 1.0 - b
    spline = a * y[k] + b * y[k + 1] + ((a**3 - a) * m[k] + (b**3 - b) * m[k + 1]) * (h**2 / 6)
    # below r_min: the tangent at r_min (its slope from the first interval, where M_0 = 0)
    slope0 = (y[1] - y[0]) / h - h * m[1] / 6
    below = y[0] + slope0 * (r - r_min)
    return jnp.where(r < r_min, below, jnp.where(r < cutoff, spline, 0.0))


def pair_correction(s: PairCorrectionSettings, table: dict, r):
    """v(r) (eV) of pair distances ``r`` (Å) for the table ``{"u": (n_points,)}``."""
    u = table["u"]
    y = u - u[-1]  # zero at the cutoff by construction
    m = jnp.asarray(_second_derivative_map(s.n_points, s.spacing), y.dtype) @ y
    return _spline(y, m, s.r_min, s.spacing, s.cutoff, s.n_points, r)


def _pair_sum(v, cutoff, positions, box, graph: Graph, atom_mask=None):
    """Σ over pairs of v(r) (eV): each pair appears as two directed edges of the graph."""
    d = edge_vectors(positions, box, graph)
    # empty slots sit at the cutoff, where v is exactly zero (and its gradient too)
    r2 = jnp.where(graph.mask, jnp.sum(d**2, axis=-1), cutoff**2)
    e = jnp.where(graph.mask, v(jnp.sqrt(r2)), 0.0)
    if atom_mask is not None:
        e = e * atom_mask[:, None]
    return 0.5 * jnp.sum(e)


def correction_energy(s: PairCorrectionSettings, table: dict, positions, box, graph: Graph, atom_mask=None):
    """Σ over pairs of v (eV) for the table ``{"u": (n_points,)}`` on the grid of ``s``."""
    return _pair_sum(lambda r: pair_correction(s, table, r), s.cutoff, positions, box, graph, atom_mask)


# --- the run-time form -----------------------------------------------------------------------------
RUNTIME_KNOTS = 256  # run-time tables are padded to a multiple of this


def runtime_table(s: PairCorrectionSettings | None, table: dict | None, cutoff: float, dtype=jnp.float32) -> dict:
    """The correction ``(s, table)`` as run-time arrays for ``runtime_correction_energy``:
    ``{"y": shifted values, "m": spline second derivatives, both zero-padded to a multiple of
    RUNTIME_KNOTS; "grid": (r_min, h, cutoff, n)}``. ``s`` None: the correction that is exactly
    zero (v = 0 and v' = 0 everywhere), on a grid that ends at ``cutoff`` (the network's)."""
    if s is None:
        y = np.zeros(RUNTIME_KNOTS)
        m, grid = y, (0.0, 1.0, float(cutoff), 3.0)
    else:
        u = np.asarray(table["u"], float)
        y = u - u[-1]
        m = _second_derivative_map(s.n_points, s.spacing) @ y
        grid = (s.r_min, s.spacing, s.cutoff, float(s.n_points))
    knots = -(-len(y) // RUNTIME_KNOTS) * RUNTIME_KNOTS
    pad = (0, knots - len(y))
    return {"y": jnp.asarray(np.pad(y, pad), dtype), "m": jnp.asarray(np.pad(m, pad), dtype),
            "grid": jnp.asarray(grid, dtype)}


def runtime_correction_energy(table: dict, positions, box, graph: Graph, atom_mask=None):
    """``correction_energy`` of a ``runtime_table`` (the same v, up to round-off)."""
    r_min, h, cutoff, n = (table["grid"][k] for k in range(4))
    n = n.astype(jnp.int32)
    return _pair_sum(lambda r: _spline(table["y"], table["m"], r_min, h, cutoff, n, r), cutoff,
                     positions, box, graph, atom_mask)
