"""Triplet slots the model computes per real triplet in MD of a crystal, with the row groups MD
graphs take (``fusedmlp.md.neighbors``) and with one K × K block (issue 17, item 4).

    python benchmarks/triplet_slots.py                       # 256-atom hcp Ti, 300 / 623 / 923 K
    python benchmarks/triplet_slots.py --temperatures 300 --ps 6

The dynamics are the reference EAM's (with its switch at 4–5 Å, the model's cutoff): the neighbour
structures and their capacities do not depend on the energy, and the EAM runs a 256-atom cell in
seconds. Each run starts at the rattled lattice sites of ``model_throughput.py``'s cell, with the
production settings of the neighbour description (capacity = largest count + 4 with the density
floor, row groups from the density floor, tightened after the first chunk); the slots per real
triplet are averaged over the frames of the run's second half.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax.numpy as jnp
import numpy as np
from ase.build import bulk
from model_throughput import SUPERCELLS, TI_MASS, _real_triplets

from fusedmlp.md.ensembles import Thermostat
from fusedmlp.md.neighbors import NeighborGraph
from fusedmlp.md.simulate import MDSettings, Simulator
from fusedmlp.model.graph import triplet_slots
from fusedmlp.reference import zhou2004
from fusedmlp.reference.eam import graph_energy_fn

CUTOFF = 5.0  # the model's


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--temperatures", type=float, nargs="*", default=[300.0, 623.0, 923.0])
    ap.add_argument("--ps", type=float, default=3.0, help="run length per temperature (2-fs steps)")
    ap.add_argument("--atoms", type=int, default=256, choices=sorted(SUPERCELLS))
    args = ap.parse_args()
    u = graph_energy_fn(dataclasses.replace(zhou2004("Ti"), r_on=CUTOFF - 1.0, r_off=CUTOFF))
    atoms = bulk("Ti", "hcp", a=2.951, c=4.684, orthorhombic=True).repeat(SUPERCELLS[args.atoms])
    atoms.rattle(0.03, seed=0)
    box, n = np.asarray(atoms.cell), len(atoms)
    steps = int(round(args.ps * 500)) // 100 * 100
    print(f"hcp Ti, {n} atoms, reference EAM dynamics, {steps} steps of 2 fs per temperature")
    print("T K | capacity | row groups | overflows | slots per real triplet: groups (range) | one K × K block")
    for t in args.temperatures:
        s = MDSettings(thermostat=Thermostat("langevin", temperature=t, friction_per_ps=4.0), timestep_fs=2.0,
                       steps=steps, record_every=100, chunk=500, seed=0)
        sim = Simulator(lambda params, r, b, g: u(r, b, g), np.full(n, TI_MASS), s, NeighborGraph(CUTOFF, skin=1.0))
        tr = sim.run(jnp.asarray(atoms.positions), box, progress=lambda m: None)
        k, groups = tr.stats["capacity"], tr.stats["groups"]
        real = [_real_triplets(r, box, CUTOFF) for r in tr.positions[len(tr.positions) // 2:]]
        grouped = [triplet_slots(n, k, groups) / x for x in real]
        print(f"{t:.0f} | {k} | {groups} | {tr.stats['reallocations']} | {np.mean(grouped):.2f} "
              f"({min(grouped):.2f}-{max(grouped):.2f}) | {np.mean([n * k * k / x for x in real]):.2f}")


if __name__ == "__main__":
    main()
