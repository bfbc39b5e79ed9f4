"""Use a trained model outside the workflow: energies, forces and stresses, and an ASE calculator.

    from fusedmlp.model.api import Potential
    pot = Potential.load("results/pretrained/model.npz")
    energy, forces, virial = pot(positions, box, numbers)
    atoms.calc = pot.calculator()

A model with several heads (one per level of theory) is used at one of them, named explicitly:
``Potential.load("results/multifidelity/model.npz", head="ref_hard")``; an unknown head is an
error naming the heads the file has.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..elastic import tensor_to_voigt
from ..md.neighbors import round_capacity
from ..quantity import energy_forces_virial
from .dimenet import species_index
from .graph import build_graph, neighbor_table
from .energy import energy_fn
from .file import load_head
from .settings import ModelSettings

class Potential:
    """A loaded model with a host-side neighbour search; compiled once per capacity bucket."""

    def __init__(self, settings: ModelSettings, params, head: int | str | None = None):
        self.settings = settings
        self.params = params
        self.head = settings.head_index(head)  # None: the only head of a single-head model
        energy = energy_fn(settings, self.head)
        self.dtype = jax.tree_util.tree_leaves(params)[0].dtype

        def efv(params, positions, box, species_idx, nbr, shf, mask, capacity):
            graph = build_graph(positions, box, nbr, shf, mask, settings.dimenet.cutoff, capacity)
            u, f, w = energy_forces_virial(
                lambda p, b: energy(params, p, b, species_idx, graph))(positions, box)
            return u, f, w, graph.overflow

        self._efv = jax.jit(efv, static_argnames="capacity")

    @staticmethod
    def load(path, head: int | str | None = None) -> "Potential":
        """The model file at ``path`` at ``head`` (a name of its heads; ``None`` for a file with
        one head)."""
        settings, params, _, index = load_head(path, head)
        return Potential(settings, params, index)

    def __call__(self, positions, box, numbers):
        """(energy eV, forces eV/Å, virial eV) of one periodic configuration."""
        positions = np.asarray(positions, float)
        box = np.asarray(box, float)
        # exact neighbours on the host; capacity rounded up so similar cells share one compilation
        nbr, shf, mask = neighbor_table(positions, box, self.settings.dimenet.cutoff)
        cap = round_capacity(max(nbr.shape[1], 1))  # at least one bucket
        pad = ((0, 0), (0, cap - nbr.shape[1]))
        nbr, mask = np.pad(nbr, pad), np.pad(mask, pad)
        shf = np.pad(shf, pad + ((0, 0),))
        dt = self.dtype
        u, f, w, overflow = self._efv(self.params, jnp.asarray(positions, dt), jnp.asarray(box, dt),
                                      jnp.asarray(species_index(numbers, self.settings.species)),
                                      jnp.asarray(nbr), jnp.asarray(shf, dt), jnp.asarray(mask), cap)
        assert not bool(overflow), "host capacities are exact; overflow means a bug"
        return float(u), np.asarray(f, float), np.asarray(w, float)

    def calculator(self) -> "MLPCalculator":
        return MLPCalculator(self)


class MLPCalculator(Calculator):
    """ASE calculator: energy (eV), forces (eV/Å), stress (eV/Å³, ASE sign: σ = −W/V)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if not np.all(self.atoms.pbc):
            raise ValueError("the potential needs a periodic cell (pbc in all three directions)")
        u, f, w = self.potential(self.atoms.positions, np.asarray(self.atoms.cell), self.atoms.numbers)
        s = -w / self.atoms.get_volume()
        self.results = {"energy": u, "free_energy": u, "forces": f, "stress": tensor_to_voigt(s)}
