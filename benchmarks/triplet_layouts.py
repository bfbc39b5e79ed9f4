"""The triplet contraction of DimeNet++'s interaction blocks in three layouts, on the neighbour
counts of a thermal hcp Ti cell: what a tighter triplet layout would buy (issue 17, item 4).

    python benchmarks/triplet_layouts.py                  # 256 atoms, displacements as at 300 K
    python benchmarks/triplet_layouts.py --capacity 32 36 --groups 4

For each graph capacity K it times, forward and backward, the part of ``n_blocks`` interaction
blocks that runs over triplets k → j → i (the angular basis Y_l(α_jab) and the contraction
Σ_b,l Y_l(α_jab) q_jbl, with the paper model's L = 7 and width 16), in

* **dense**: (N, K, K) blocks per row j, one batched matmul per block (the model's layout in
  graphs without row groups: training batches, DiffTRe frames, MD cells under 64 atoms);
* **grouped**: rows sorted by neighbour count into G groups, each a dense block with its own
  capacity (the count at the group's first rank + 2), gathered in and out of the slot layout
  (the model's layout in MD graphs of 64 atoms and more);
* **list**: a compact triplet list (every pair a ≠ b of the edges of row j, capacity the real
  count + 2 %), a gather of q per triplet and a sorted segment sum into the edges.

It prints the slots each layout computes per real triplet and the time per call, and checks that
the three give the same value. The other layouts are written out here, not in the package. On
this CPU (2026-12-07) the list took 6-8x the dense blocks' time (its gathers and scatters of
T × L × I values). Four groups (1.36 slots per real triplet) took as long as dense blocks at
K = 32, the capacity MD allocates at 300 K, and 0.75x at K = 36; eight groups (1.29) 0.89x and
0.70x. In the whole model the groups also shrink the per-slot radial basis and its products with
the messages, which this benchmark leaves out: MD graphs of 64 atoms and more now take up to
eight groups (``fusedmlp.md.neighbors``; the model's first group keeps the graph capacity, where
the grouped layout here gives every group its fullest row + 2), and ``model_throughput.py``
measures what that buys a whole MD step.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from fusedmlp.model import basis
from fusedmlp.model.graph import group_starts, neighbor_table, triplet_slots
from fusedmlp.space import edge_displacements
from fusedmlp.structures import crystal

L, WIDTH = 7, 16  # the paper model's n_spherical and int_embed_size


def thermal_cell(n_cells, sigma: float, cutoff: float, seed: int = 0):
    """Unit vectors of the edges of hcp Ti with Gaussian displacements of ``sigma`` Å: (N, M, 3)
    per row, their mask (N, M) and the counts."""
    at = crystal("Ti", "hcp", 2.95, 1.587, n_cells)
    pos = at.positions + np.random.default_rng(seed).normal(scale=sigma, size=at.positions.shape)
    box = np.asarray(at.cell)
    nbr, shifts, mask = neighbor_table(pos, box, cutoff)
    d = edge_displacements(pos, box, nbr, shifts)
    d[~mask] = 1.0  # empty slots: any nonzero vector
    return d / np.linalg.norm(d, axis=-1, keepdims=True), mask, mask.sum(1)


def _contract(u, mask, qs):
    """Σ_b,l Y_l(u_a·u_b) q[b, l] for rows of dense blocks: (n, k, 3), (n, k), [(n, k, L, I)]."""
    n, k = mask.shape
    cos = jnp.clip(jnp.einsum("jax,jbx->jab", u, u), -1.0, 1.0)
    pair = mask[:, :, None] & mask[:, None, :] & ~jnp.eye(k, dtype=bool)[None]
    ang = (basis.sbf_angular(cos, L) * pair[..., None]).reshape(n, k, k * L)
    return [jnp.matmul(ang, q.reshape(n, k * L, -1)) for q in qs]


def dense_fn(mask):
    def f(u, qs, out):
        return sum(jnp.sum(jnp.tanh(a) * w) for a, w in zip(_contract(u, mask, qs), out))
    return f


def grouped_fn(mask, counts, groups: int):
    n, k = mask.shape
    starts = group_starts(n, groups)
    ranked = np.sort(counts)[::-1]
    caps = [int(min(k, ranked[a] + 2)) for a in starts]
    order = jnp.asarray(np.argsort(-counts, kind="stable"))  # on device in a real step: a sort per step
    inverse = jnp.argsort(order)

    def f(u, qs, out):
        parts = [[] for _ in qs]
        for a, b, c in zip(starts, starts[1:] + [n], caps):
            rows = order[a:b]
            aggs = _contract(u[rows, :c], mask[rows, :c], [q[rows, :c] for q in qs])
            for b, a in enumerate(aggs):
                parts[b].append(jnp.pad(a, ((0, 0), (0, k - c), (0, 0))))
        return sum(jnp.sum(jnp.tanh(jnp.concatenate(p)[inverse]) * w) for p, w in zip(parts, out))
    return f, triplet_slots(n, k, caps), caps


def list_fn(mask, counts):
    n, k = mask.shape
    a, b = [], []
    for j in range(n):
        ia, ib = np.nonzero(~np.eye(counts[j], dtype=bool))
        a.append(j * k + ia)
        b.append(j * k + ib)
    a, b = np.concatenate(a), np.concatenate(b)
    cap = int(math.ceil(1.02 * len(a)))
    valid = jnp.asarray(np.arange(cap) < len(a))
    a = jnp.asarray(np.pad(a, (0, cap - len(a)), constant_values=n * k - 1))
    b = jnp.asarray(np.pad(b, (0, cap - len(b)), constant_values=n * k - 1))

    def f(u, qs, out):
        uf = u.reshape(n * k, 3)
        cos = jnp.clip(jnp.sum(uf[a] * uf[b], -1), -1.0, 1.0)
        ang = basis.sbf_angular(cos, L) * valid[:, None]  # (T, L)
        tot = 0.0
        for q, w in zip(qs, out):
            t = jnp.einsum("tl,tli->ti", ang, q.reshape(n * k, L, -1)[b])
            agg = jax.ops.segment_sum(t, a, n * k, indices_are_sorted=True).reshape(n, k, -1)
            tot = tot + jnp.sum(jnp.tanh(agg) * w)
        return tot
    return f, cap


def timed(f, args, repeats: int) -> float:
    g = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
    jax.block_until_ready(g(*args))
    t = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(g(*args))
    return (time.perf_counter() - t) / repeats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--capacity", type=int, nargs="*", default=[32, 36],
                    help="graph capacities K (MD sizes 32 at 300 K, model_throughput.py's runs 36)")
    ap.add_argument("--groups", type=int, default=8, help="row groups of the grouped layout (MD's: 8)")
    ap.add_argument("--cells", type=int, nargs=3, default=[4, 4, 8], help="hcp supercell (4 4 8: 256 atoms)")
    ap.add_argument("--sigma", type=float, default=0.08,
                    help="displacement per Cartesian component, Å (0.08: a mean count within 5 Å of "
                         "23.9, as MD at 300 K has 23.8)")
    ap.add_argument("--blocks", type=int, default=4, help="interaction blocks")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    u0, mask0, counts = thermal_cell(tuple(args.cells), args.sigma, 5.0)
    n, real = len(counts), int(np.sum(counts * (counts - 1)))
    print(f"{n} atoms, neighbours within 5 Å: mean {counts.mean():.1f}, max {counts.max()}; "
          f"{real / n:.0f} real triplets per atom; device {jax.devices()[0].platform}")
    print("K | layout | slots / real triplet | ms per call (fwd+bwd) | ratio to dense")
    rng = np.random.default_rng(1)
    for k in args.capacity:
        if k < counts.max():
            raise SystemExit(f"--capacity {k} is below the largest neighbour count {counts.max()}")
        pad = ((0, 0), (0, k - mask0.shape[1]))
        mask = jnp.asarray(np.pad(mask0, pad))
        u = jnp.asarray(np.pad(u0, pad + ((0, 0),), constant_values=1 / math.sqrt(3)), jnp.float32)
        qs = [jnp.asarray(rng.normal(size=(n, k, L, WIDTH)), jnp.float32) for _ in range(args.blocks)]
        out = [jnp.asarray(rng.normal(size=(n, k, WIDTH)), jnp.float32) * mask[..., None] for _ in qs]
        grouped, g_slots, caps = grouped_fn(mask, counts, args.groups)
        listed, l_slots = list_fn(mask, counts)
        layouts = [("dense", dense_fn(mask), n * k * k), (f"grouped {caps}", grouped, g_slots),
                   ("list", listed, l_slots)]
        values = [float(f(u, qs, out)) for _, f, _ in layouts]
        if not np.allclose(values, values[0], rtol=1e-4):
            raise SystemExit(f"the layouts disagree at K = {k}: {values}")
        base = None
        for name, f, slots in layouts:
            t = timed(f, (u, qs, out), args.repeats)
            base = base or t
            print(f"{k} | {name} | {slots / real:.2f} | {1e3 * t:.1f} | {t / base:.2f}")


if __name__ == "__main__":
    main()
