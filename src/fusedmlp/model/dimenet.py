"""DimeNet++ (Gasteiger, Giri, Margraf & Günnemann, arXiv:2011.14115, 2020) in dm-haiku.

Directional message passing on the edges of a periodic graph (``graph.Graph``): an embedding
block, ``n_blocks`` interaction blocks that mix each edge message with the messages of the
edges feeding it through a 2D (distance, angle) basis, and an output block after every stage
that sums edge messages into atoms. The network returns per-atom outputs, one column per head
(levels of theory share the backbone and differ only in the last linear layer).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from . import basis
from .graph import (Graph, edge_receivers, edge_vectors, from_triplet_blocks, sum_into_atoms, to_edges,
                    to_slots, triplet_blocks, triplet_sources)


@dataclasses.dataclass(frozen=True)
class DimeNetSettings:
    """Hyperparameters; defaults are the fused-training paper's (a quarter of DimeNet++'s widths)."""

    cutoff: float = 5.0  # Å
    embed_size: int = 32  # edge message width
    out_embed_size: int = 64  # output block width
    type_embed_size: int = 16  # atom-type embedding
    int_embed_size: int = 16  # triplet (angle) interaction width
    basis_embed_size: int = 8  # basis projection width
    n_blocks: int = 4
    n_radial: int = 6
    n_spherical: int = 7
    envelope_p: int = 6
    n_output_layers: int = 3
    n_before_skip: int = 1
    n_after_skip: int = 2
    n_species: int = 1
    n_heads: int = 1
    # Sums over the ~20 neighbours of an atom in a dense solid (edges into an atom, triplets into
    # an edge) are divided by this number, so activations stay O(1) through the blocks. Set from
    # the training data (mean in-degree); it is a property of the data, not a hyperparameter.
    aggregation_scale: float = 1.0


def swish(x):
    return x * jax.nn.sigmoid(x)


def _dense(size, name, bias=True):
    # Glorot-uniform (the original uses Glorot-orthogonal with scale 2, whose residual stacks grow
    # activations ~4x per block; with ~20 neighbours per atom that reaches 1e6 after four blocks).
    return hk.Linear(size, with_bias=bias, name=name,
                     w_init=hk.initializers.VarianceScaling(1.0, "fan_avg", "uniform"))


class _Residual(hk.Module):
    def __init__(self, size, name=None):
        super().__init__(name=name)
        self.size = size

    def __call__(self, x):
        h = swish(_dense(self.size, "lin1")(x))
        return x + swish(_dense(self.size, "lin2")(h))


class DimeNetPP(hk.Module):
    """Edges are the slots of ``Graph`` rows: m[i, s] is the message from neighbors[i, s] to i.

    Messages and every per-edge layer live in the graph's edge list (E, F), which skips the empty
    slots when the graph lists its edges compactly; the triplet sums run over dense slot blocks of
    the rows: (N, K, K), or one (rows, c, c) block per row group of a graph with groups
    (``graph.triplet_blocks``; ``graph.to_slots`` and ``graph.to_edges`` move between layouts).
    """

    def __init__(self, s: DimeNetSettings, name="dimenet_pp"):
        super().__init__(name=name)
        self.s = s

    def __call__(self, positions, box, species, graph: Graph):
        s = self.s
        mask = graph.mask
        d = edge_vectors(positions, box, graph)  # (N, K, 3)
        r2 = jnp.sum(d**2, axis=-1)
        # empty slots get a harmless dummy length so that no NaN reaches the gradients
        r = jnp.sqrt(jnp.where(mask, r2, (0.5 * s.cutoff) ** 2))
        x = r / s.cutoff

        freq = hk.get_parameter("rbf_frequencies", (s.n_radial,), init=lambda *_: jnp.asarray(
            np.pi * np.arange(1, s.n_radial + 1), dtype=positions.dtype))
        # Triplets k → j → i live in row j: slot b is the edge k→j, slot a the reverse of j→i.
        # The angle at j is between the vectors j→k and j→i. Per block (rows, c): the rows' first
        # c slots, which hold all their neighbours.
        u = d / r[..., None]
        blocks = []
        for rows, c in triplet_blocks(graph):
            take = (lambda a, c=c: a[:, :c]) if rows is None else (lambda a, rows=rows, c=c: a[rows, :c])
            ub, mb = take(u), take(mask)
            cos = jnp.clip(jnp.einsum("jax,jbx->jab", ub, ub), -1.0, 1.0)  # (n, c, c)
            t_mask = mb[:, :, None] & mb[:, None, :] & ~jnp.eye(c, dtype=bool)[None]
            angular = basis.sbf_angular(cos, s.n_spherical) * t_mask[..., None]  # (n, c, c, L)
            radial = basis.sbf_radial(take(x), s.n_spherical, s.n_radial, s.envelope_p)  # (n, c, L, R)
            blocks.append((take, angular, radial * mb[..., None, None]))
        sources = triplet_sources(graph)

        edge_mask = graph.edge_mask
        rbf = basis.bessel_rbf(to_edges(graph, x), freq, s.envelope_p) * edge_mask[:, None]  # (E, R)
        h = hk.Embed(s.n_species, s.type_embed_size, name="type_embedding")(species)
        rbf_e = swish(_dense(s.embed_size, "emb_rbf")(rbf))
        senders = to_edges(graph, graph.neighbors)
        m = swish(_dense(s.embed_size, "emb_edge")(
            jnp.concatenate([h[edge_receivers(graph)], h[senders], rbf_e], axis=-1)))  # (E, F)

        out = self._output(m, rbf, graph, "output_0")
        for b in range(s.n_blocks):
            m = self._interaction(m, rbf, blocks, sources, graph, f"interaction_{b}")
            out = out + self._output(m, rbf, graph, f"output_{b + 1}")
        return out  # (N, n_heads)

    def _interaction(self, m, rbf, blocks, sources, graph: Graph, name):
        s = self.s
        with hk.experimental.name_scope(name):
            x_ji = swish(_dense(s.embed_size, "lin_ji")(m))
            x_kj = swish(_dense(s.embed_size, "lin_kj")(m))
            rbf_p = _dense(s.embed_size, "lin_rbf2", bias=False)(
                _dense(s.basis_embed_size, "lin_rbf1", bias=False)(rbf))
            x_kj = swish(_dense(s.int_embed_size, "lin_down", bias=False)(x_kj * rbf_p))  # (E, I)
            x_kj = to_slots(graph, x_kj)  # (N, K, I): the edges k → j of row j
            # Σ_b x_kj[j,b] ⊙ W2 W1 a(d_jb, α_jab): W1 acts on the radial part per edge, and the
            # angular factor Y_l(α) is contracted over (b, l) in one batched matmul per row j,
            # never forming a (N, K, K, L·R) array.
            n_l, n_r = s.n_spherical, s.n_radial
            init = hk.initializers.VarianceScaling(1.0, "fan_avg", "uniform")
            dtype = blocks[0][2].dtype
            w1 = hk.get_parameter("lin_sbf1", (n_l, n_r, s.basis_embed_size), dtype, init=init)
            w2 = hk.get_parameter("lin_sbf2", (s.basis_embed_size, s.int_embed_size), dtype, init=init)
            # radial W1 W2 as one flat matmul with a block-diagonal (L·R, L·I) weight, then ⊙ x_kj:
            # an einsum over l lowered to transposes of the (n, c, L, R) array and a matmul per
            # l, and an einsum over all three to one tiny matmul per edge in the backward pass
            w = jnp.einsum("lrc,ci->lri", w1, w2)
            w = (w[:, :, None, :] * jnp.eye(n_l, dtype=w.dtype)[:, None, :, None]).reshape(n_l * n_r, -1)
            aggs = []
            for take, angular, radial in blocks:
                n, c = angular.shape[:2]
                q = (radial.reshape(n * c, n_l * n_r) @ w).reshape(n, c, n_l, -1)
                q = q * take(x_kj)[:, :, None, :]  # (n, c, L, I)
                aggs.append(jnp.matmul(angular.reshape(n, c, c * n_l), q.reshape(n, c * n_l, -1)))
            # row j, slot a holds the triplet sum for the message j → i_a (masked through
            # ``angular``); move it to that edge
            agg = from_triplet_blocks(graph, aggs, sources) / s.aggregation_scale  # (E, I)
            x = swish(_dense(s.embed_size, "lin_up", bias=False)(agg))
            h = x_ji + x
            for k in range(s.n_before_skip):
                h = _Residual(s.embed_size, name=f"res_before_{k}")(h)
            h = swish(_dense(s.embed_size, "lin_skip")(h)) + m
            for k in range(s.n_after_skip):
                h = _Residual(s.embed_size, name=f"res_after_{k}")(h)
            return h

    def _output(self, m, rbf, graph: Graph, name):
        s = self.s
        with hk.experimental.name_scope(name):
            t = _dense(s.embed_size, "lin_rbf", bias=False)(rbf) * m
            atom = sum_into_atoms(graph, t) / s.aggregation_scale  # (N, F)
            atom = _dense(s.out_embed_size, "lin_up", bias=False)(atom)
            for k in range(s.n_output_layers):
                atom = swish(_dense(s.out_embed_size, f"lin_{k}")(atom))
            return hk.Linear(s.n_heads, with_bias=False, w_init=jnp.zeros, name="lin_out")(atom)


def dimenet_pp(settings: DimeNetSettings):
    """``(init, apply)`` of the network; ``apply(params, positions, box, species, graph)`` returns
    per-atom outputs (N, n_heads)."""

    def forward(positions, box, species, graph):
        return DimeNetPP(settings)(positions, box, species, graph)

    t = hk.without_apply_rng(hk.transform(forward))
    return t.init, t.apply


def species_index(species_z: Sequence[int], known_z: Sequence[int]) -> np.ndarray:
    """Map atomic numbers to embedding rows; raises for species the model does not know."""
    table = {int(z): k for k, z in enumerate(known_z)}
    unknown = sorted({int(z) for z in np.asarray(species_z).ravel()} - set(table))
    if unknown:
        from ase.data import chemical_symbols
        raise ValueError(f"species {[chemical_symbols[z] for z in unknown]} are unknown to the model "
                         f"(it knows {[chemical_symbols[z] for z in known_z]})")
    return np.vectorize(lambda z: table[int(z)], otypes=[np.int32])(np.asarray(species_z))
