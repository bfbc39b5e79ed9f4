"""Units and physical constants: the one place where conversions live.

Internal unit system (used by every array inside the package):

    length  Å          energy  eV          time  ps
    mass    eV ps²/Å² (convert atomic masses with ``AMU``)
    temperature K      (thermal energy ``KB * T`` in eV)

Reported quantities: eV, eV/atom, eV/Å, GPa, Å, K, ps, m²/s. Every other module converts
through the names defined here; a bare numeric conversion factor anywhere else is a bug.

Constants are CODATA 2018 values.
"""

from __future__ import annotations

import math

# --- base constants ---------------------------------------------------------------
KB = 8.617333262e-5  # Boltzmann constant, eV/K
EV_J = 1.602176634e-19  # 1 eV in J (exact)
AVOGADRO = 6.02214076e23  # 1/mol (exact)
AMU_KG = 1.66053906660e-27  # atomic mass unit, kg
ANGSTROM_M = 1e-10
PS_S = 1e-12

# --- derived internal units -----------------------------------------------------------
# 1 u expressed in eV ps²/Å²:  kg -> J s²/m² -> eV ps²/Å².
AMU = AMU_KG / EV_J * (ANGSTROM_M / PS_S) ** 2  # ≈ 1.0364e-4
FS = 1e-3  # 1 fs in ps

# --- pressure / stress ------------------------------------------------------------------
EV_PER_A3_IN_GPA = EV_J / ANGSTROM_M**3 / 1e9  # ≈ 160.2177 GPa per eV/Å³
GPA = 1.0 / EV_PER_A3_IN_GPA  # 1 GPa in eV/Å³
BAR = 1e-4 * GPA

# --- transport ----------------------------------------------------------------------------
A2_PER_PS_IN_M2_PER_S = ANGSTROM_M**2 / PS_S  # 1 Å²/ps = 1e-8 m²/s
AMU_PER_A3_TO_G_CM3 = AMU_KG * 1e3 / (ANGSTROM_M * 1e2) ** 3  # 1 u/Å³ ≈ 1.6605 g/cm³

# --- phonons ---------------------------------------------------------------------------------
THZ = 1.0  # 1 THz in 1/ps: phonon frequencies in THz are already internal inverse times
# ν = sqrt(k/m) / 2π in THz for k in eV/Å² and m in u (phonopy's default, "VASP", unit factor).
EV_A2_AMU_TO_THZ = 1.0 / (2.0 * math.pi * math.sqrt(AMU)) / THZ  # ≈ 15.6333

# --- units of the original paper code (nm, kJ/mol, ps, u) -----------------------------------
KJ_PER_MOL = 1e3 / AVOGADRO / EV_J  # 1 kJ/mol in eV ≈ 0.010364
NM = 10.0  # 1 nm in Å
MEV = 1e-3  # 1 meV in eV


def ev_per_a3_to_gpa(x):
    """Stress or pressure from eV/Å³ to GPa."""
    return x * EV_PER_A3_IN_GPA


def ev_per_a3_to_mpa(x):
    """Stress or pressure from eV/Å³ to MPa (a thermal pressure coefficient: eV/Å³/K to MPa/K)."""
    return x * (1e3 * EV_PER_A3_IN_GPA)


def gpa_to_ev_per_a3(x):
    """Stress or pressure from GPa to eV/Å³."""
    return x * GPA


def a2_per_ps_to_m2_per_s(x):
    """Diffusion coefficient from Å²/ps to m²/s."""
    return x * A2_PER_PS_IN_M2_PER_S


def loss_weight_from_kj_mol(weight, length_power: int = 0):
    """A squared-error loss weight on a quantity in kJ/mol/nm^k (the paper code's units), in the
    internal (eV/Å^k)⁻²: 1 eV/Å^k = NM^k / KJ_PER_MOL kJ/mol/nm^k, squared. Forces (k = 1) gain
    964.85², energies and virials (k = 0) 96.485²."""
    return weight * (NM**length_power / KJ_PER_MOL) ** 2


def kT(temperature_k):
    """Thermal energy k_B T in eV."""
    return KB * temperature_k


def mass_to_internal(mass_u):
    """Atomic mass from u to eV ps²/Å²."""
    return mass_u * AMU
