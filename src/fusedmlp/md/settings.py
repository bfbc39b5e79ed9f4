"""The dynamics of an MD run: integrator time step, thermostat and barostat parameters.

One frozen ``Dynamics`` describes how the equations of motion are integrated, for every user of
the MD layer: the evaluation runs (config ``evaluation.md``), the DiffTRe trajectories (config
``difftre``: Langevin) and the reference data's sampling (config ``reference.sampling.md``:
Langevin). What a run does with them — its length, temperature, pressure, recording interval —
is not part of it: ``thermostat(temperature)``, ``barostat(pressure_gpa, coupling)``,
``steps(ps)`` and ``md(...)`` turn it into the ``md.ensembles``/``md.simulate`` settings of a run.
"""

from __future__ import annotations

import dataclasses

from .. import units
from .ensembles import THERMOSTATS, Barostat, Thermostat
from .simulate import MDSettings

# config key -> field, where they differ (a config section names the thermostat kind ``thermostat``)
CONFIG_KEYS = {"thermostat": "thermostat_kind"}


@dataclasses.dataclass(frozen=True)
class Dynamics:
    """Integrator, thermostat and barostat of MD runs. Defaults: 1 fs; Langevin at 4/ps; the
    paper's Nose–Hoover chains (length 5, 2 chain steps, 3rd-order Suzuki–Yoshida, τ_T = 50 fs);
    the barostat's τ_P = 0.5 ps and β_T = 0.01/GPa."""

    timestep_fs: float = 1.0
    thermostat_kind: str = "langevin"  # langevin, nose-hoover, or none (NVE)
    friction_per_ps: float = 4.0  # Langevin only
    tau_fs: float = 50.0  # Nose–Hoover chains only
    chain_length: int = 5
    chain_steps: int = 2
    sy_steps: int = 3  # Suzuki–Yoshida order: 1, 3, 5 or 7
    barostat_tau_ps: float = 0.5
    compressibility_per_gpa: float = 0.01  # β_T; sets how fast the cell relaxes, not where
    seed: int = 0  # of the thermostat's and barostat's noise; a run may add its own offset

    def __post_init__(self):
        if self.thermostat_kind not in THERMOSTATS:
            raise ValueError(f"thermostat kind {self.thermostat_kind!r}: expected one of {THERMOSTATS}")
        if self.sy_steps not in (1, 3, 5, 7):
            raise ValueError(f"Suzuki–Yoshida steps {self.sy_steps}: expected 1, 3, 5 or 7")

    @staticmethod
    def from_config(section: dict) -> "Dynamics":
        """From a config section (``evaluation.md``, ``difftre``, ``reference.sampling.md``): the
        fields whose keys it has (``thermostat`` names the kind), the defaults for the rest. Its
        other keys (run lengths, ...) belong to its other readers and are not read here."""
        names = {f.name for f in dataclasses.fields(Dynamics)}
        kw = {CONFIG_KEYS.get(k, k): v for k, v in section.items() if CONFIG_KEYS.get(k, k) in names}
        return Dynamics(**kw)

    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs * units.FS

    def steps(self, ps: float) -> int:
        """Steps in ``ps`` picoseconds (at least one)."""
        return max(1, int(round(ps / self.timestep_ps)))

    def thermostat(self, temperature: float) -> Thermostat:
        return Thermostat(self.thermostat_kind, temperature=temperature, friction_per_ps=self.friction_per_ps,
                          tau_fs=self.tau_fs, chain_length=self.chain_length, chain_steps=self.chain_steps,
                          sy_steps=self.sy_steps)

    def barostat(self, pressure_gpa: float = 0.0, coupling: str = "hexagonal") -> Barostat:
        """Stochastic cell rescaling at ``pressure_gpa`` with the cell lengths grouped by
        ``coupling`` (isotropic, hexagonal or orthorhombic; ``md.ensembles``)."""
        return Barostat(pressure_gpa=pressure_gpa, tau_ps=self.barostat_tau_ps, coupling=coupling,
                        compressibility_per_gpa=self.compressibility_per_gpa)

    def md(self, temperature: float, steps: int, record_every: int, chunk: int,
           barostat: Barostat | None = None) -> MDSettings:
        """The ``md.simulate`` settings of runs of these dynamics (seed: this one's)."""
        return MDSettings(thermostat=self.thermostat(temperature), barostat=barostat,
                          timestep_fs=self.timestep_fs, steps=steps, record_every=record_every,
                          chunk=chunk, seed=self.seed)
