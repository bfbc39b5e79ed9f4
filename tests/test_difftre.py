"""DiffTRe reweighting (training.difftre): exact identities of the weights, the batched two-pass
gradient against a one-pass ``jax.grad``, and the DiffTRe gradient of reweighted observables
against a finite difference of independent NVT simulations (pressure by default; pressure, C11 and
C44 with longer runs in the slow test).

The system is a 32-atom fcc cell with a Morse pair potential (Girifalco–Weizer Cu parameters) and a
C² switch, parametrised by the well depth ``D`` and the stiffness ``alpha``: small and short-ranged
enough that an MD run of 10⁴ steps takes seconds.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusedmlp import units
from fusedmlp.md.ensembles import Thermostat
from fusedmlp.md.neighbors import NeighborGraph, frame_graphs
from fusedmlp.md.simulate import MDSettings, Simulator
from fusedmlp.model.graph import edge_vectors
from fusedmlp.observables.averages import block_estimate
from fusedmlp.observables.born_directions import born_directions, fit_init, fit_pool, fit_slopes, fit_update
from fusedmlp.observables.reweighting import (Frames, directional_quantities, effective_sample_size,
                                              frame_quantities, make_frames,
                                              reweighting_weights)
from fusedmlp.observables.structure import rdf_bins
from fusedmlp.structures import crystal
from fusedmlp.training.difftre import Reweighter, StatePoint, predictions, state_loss

CU = 63.546  # u
A_LAT = 3.615  # Å, fcc lattice parameter
D0, ALPHA0, R0 = 0.3429, 1.3588, 2.866  # Morse: eV, 1/Å, Å
R_ON, R_OFF = 4.5, 5.5  # switch, Å: three neighbour shells inside, the fourth in the switch
THETA0 = {"D": D0, "alpha": ALPHA0}
THETA0_C = dict(THETA0, c=0.0)  # for shifted_morse


def switch(r):
    x = jnp.clip((r - R_ON) / (R_OFF - R_ON), 0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def morse(params, positions, box, graph):
    """U = ½ Σ_ij D [e^{−2α(r−r₀)} − 2 e^{−α(r−r₀)}] S(r) on a graph with cutoff R_OFF."""
    d = edge_vectors(positions, box, graph)
    r = jnp.sqrt(jnp.where(graph.mask, jnp.sum(d**2, -1), 1.0))
    e = jnp.exp(-params["alpha"] * (r - R0))
    phi = params["D"] * (e * e - 2.0 * e) * switch(r)
    return 0.5 * jnp.sum(jnp.where(graph.mask & (r < R_OFF), phi, 0.0))


def shifted_morse(params, positions, box, graph):
    """Morse plus a configuration-independent constant ``c``."""
    return morse(params, positions, box, graph) + params["c"]


def fcc_cell():
    at = crystal("Cu", "fcc", A_LAT, None, (2, 2, 2))
    return np.asarray(at.positions), np.asarray(at.cell)


def state_point(temperature, targets, weights=None, name="cu-test"):
    pos, box = fcc_cell()
    n = len(pos)
    return StatePoint(name, temperature, pos, box, np.zeros(n, int), np.full(n, CU), targets,
                      weights if weights is not None else {k: 1.0 for k in targets},
                      symmetry="cubic")


CAPACITY = 72  # graph slots per atom for every frame set: one compiled reweighter serves all tests
BATCH = 7


def graphs_of(positions, box):
    return frame_graphs(positions, box, R_OFF, capacity=CAPACITY)


@pytest.fixture(scope="module")
def rw():
    """The reweighter of every test (compiling the Born terms and their VJP once)."""
    return Reweighter(shifted_morse, batch_frames=BATCH)


# --- cheap exact checks on rattled configurations (no MD) ----------------------------------------

T_EXACT = 500.0
N_FRAMES = 30  # with BATCH = 7: four full batches and a remainder of 2 (the padding path)
RDF_BINS, RDF_RMAX = 12, 3.4


@pytest.fixture(scope="module")
def rattled(rw):
    """Frames of thermal-looking configurations: lattice + Gaussian displacements, Maxwell–
    Boltzmann momenta; u_ref = U at THETA0. Targets exercise every observable path."""
    rng = np.random.default_rng(7)
    pos0, box = fcc_cell()
    n = len(pos0)
    pos = pos0[None] + rng.normal(scale=0.08, size=(N_FRAMES, n, 3))
    mass = units.mass_to_internal(CU)
    mom = rng.normal(scale=np.sqrt(mass * units.kT(T_EXACT)), size=(N_FRAMES, n, 3))
    graphs = graphs_of(pos, box)
    _, r_centres = rdf_bins(RDF_RMAX, RDF_BINS)
    targets = {"pressure": 1.0, "pressure_c": -0.5, "C11": 150.0, "C12": 100.0, "C44": 70.0,
               "rdf": (r_centres, np.linspace(0.0, 2.0, RDF_BINS))}
    weights = {"pressure": 0.3, "pressure_c": 0.2, "C11": 1e-3, "C12": 2e-3, "C44": 1e-3, "rdf": 0.5}
    sp = state_point(T_EXACT, targets, weights)
    fr = make_frames(pos, mom, np.full(n, CU), box, graphs, np.zeros(N_FRAMES), sp)
    fr = dataclasses.replace(fr, u_ref=rw.energies(THETA0_C, fr))
    return sp, fr, rw


def test_weights_uniform_at_sampling_parameters(rattled):
    """At θ = θ̂: w_i = 1/F, ESS = 1, and the predictions are plain frame averages."""
    sp, fr, rw = rattled
    w = np.asarray(reweighting_weights(jnp.asarray(fr.u_ref), jnp.asarray(fr.u_ref), sp.temperature))
    np.testing.assert_allclose(w, 1.0 / N_FRAMES, rtol=1e-14)
    assert effective_sample_size(w) == pytest.approx(1.0, abs=1e-12)
    loss, pred, ess, grad = rw.evaluate(THETA0_C, fr, sp, gradient=False)
    assert grad is None and ess == pytest.approx(1.0, abs=1e-12)
    q = rw.quantities(THETA0_C, fr, True)
    v = abs(np.linalg.det(sp.box))
    p_frames = np.einsum("fii->fi", fr.fixed["kinetic"]) / v - np.asarray(q["born_stress"])[:, :3]
    assert pred["pressure"] == pytest.approx(units.ev_per_a3_to_gpa(p_frames.mean()), rel=1e-12)
    np.testing.assert_allclose(pred["rdf"], fr.fixed["rdf"].mean(0), rtol=1e-12)


def test_constant_energy_shift_leaves_weights_unchanged(rattled):
    """U_θ = U_θ̂ + c: the same weights, ESS = 1, the same predictions and loss, and no gradient
    with respect to c."""
    sp, fr, rw = rattled
    u = jnp.asarray(fr.u_ref) + jnp.asarray(np.random.default_rng(1).normal(scale=0.05, size=N_FRAMES))
    w0 = np.asarray(reweighting_weights(u, jnp.asarray(fr.u_ref), sp.temperature))
    w1 = np.asarray(reweighting_weights(u + 3.7, jnp.asarray(fr.u_ref), sp.temperature))
    np.testing.assert_allclose(w1, w0, rtol=1e-10)
    assert effective_sample_size(w0) < 0.99  # the perturbation itself does move the weights

    base = rw.evaluate(THETA0_C, fr, sp)
    moved = rw.evaluate(dict(THETA0_C, c=2.5), fr, sp)
    assert moved[2] == pytest.approx(1.0, abs=1e-12)
    assert moved[0] == pytest.approx(base[0], rel=1e-10)
    for k in ("pressure", "C11", "C12", "C44"):
        assert moved[1][k] == pytest.approx(base[1][k], rel=1e-10)
    assert abs(float(moved[3]["c"])) < 1e-10 * abs(base[0])
    assert abs(float(base[3]["c"])) < 1e-10 * abs(base[0])
    for k in THETA0:
        assert float(moved[3][k]) == pytest.approx(float(base[3][k]), rel=1e-9)


def numpy_isothermal(q, w, fr, sp):
    """B^T (6×6, eV/Å³), T λ (6,) and C_V/k_B of weighted frames, written out in numpy."""
    v, n = abs(np.linalg.det(sp.box)), len(sp.positions)
    s, cb = q["born_stress"], q["born_stiffness"]
    ds, du = s - w @ s, q["energy"] - w @ q["energy"]
    kt = units.KB * sp.temperature
    k_mean = fr.fixed["kinetic"].mean(0) / v  # θ-independent: plain mean
    c = np.einsum("f,fij->ij", w, cb) - (v / kt) * np.einsum("f,fi,fj->ij", w, ds, ds)
    # kinetic term and Birch correction in index form, σ the mean Cauchy stress
    pairs = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]
    sigma = np.array([[(w @ s)[pairs.index(tuple(sorted((a, b))))] for b in range(3)] for a in range(3)]) - k_mean
    d = np.eye(3)
    for x, (i, j) in enumerate(pairs):
        for y, (k, l) in enumerate(pairs):
            for t in (k_mean, sigma):
                c[x, y] += 0.5 * (t[i, k] * d[j, l] + t[j, k] * d[i, l] + t[i, l] * d[j, k] + t[j, l] * d[i, k])
            c[x, y] -= sigma[i, j] * d[k, l]
    lam = (w @ (ds * du[:, None])) / kt - (n * kt / v) * np.r_[1.0, 1, 1, 0, 0, 0]
    cv = 1.5 * n + (w @ du**2) / kt**2
    return c, lam, cv


def test_reweighted_averages_match_numpy(rattled):
    """At θ ≠ θ̂ the predictions and ESS equal an explicit numpy computation: softmax weights of
    −β(U_θ − U_θ̂), the weighted pressure, the weighted adiabatic stress-fluctuation C11/C12/C44
    (Birch coefficients) with the Born terms and energies at θ, and the weighted RDF."""
    sp, fr, rw = rattled
    theta = {"D": D0 * 1.04, "alpha": ALPHA0 * 0.98, "c": 0.1}
    loss, pred, ess, _ = rw.evaluate(theta, fr, sp, gradient=False)
    q = {k: np.asarray(v) for k, v in rw.quantities(theta, fr, True).items()}
    beta = 1.0 / (units.KB * sp.temperature)
    x = -beta * (q["energy"] - fr.u_ref)
    w = np.exp(x - x.max())
    w /= w.sum()
    assert 0.05 < ess < 0.95  # a genuinely non-uniform reweighting
    assert ess == pytest.approx(np.exp(-np.sum(w * np.log(w))) / N_FRAMES, rel=1e-10)

    v, n = abs(np.linalg.det(sp.box)), len(sp.positions)
    kin = np.einsum("fii->fi", fr.fixed["kinetic"]).mean(0) / v  # θ-independent: plain mean
    p_normal = units.ev_per_a3_to_gpa(kin - w @ q["born_stress"][:, :3])  # P_xx, P_yy, P_zz
    assert pred["pressure"] == pytest.approx(p_normal.mean(), rel=1e-10)
    assert pred["pressure_a"] == pytest.approx(p_normal[:2].mean(), rel=1e-10)
    assert pred["pressure_c"] == pytest.approx(p_normal[2], rel=1e-10)
    assert abs(pred["pressure_c"] - pred["pressure_a"]) > 1e-3  # the rattled frames are anisotropic

    c, lam, cv = numpy_isothermal(q, w, fr, sp)
    kt = units.KB * sp.temperature
    c = units.ev_per_a3_to_gpa(c + v / (kt * cv) * np.outer(lam, lam))
    assert pred["C11"] == pytest.approx(np.trace(c[:3, :3]) / 3, rel=1e-10)
    off = c[:3, :3][~np.eye(3, dtype=bool)]  # B_IJ ≠ B_JI under anisotropic stress: all six
    assert pred["C12"] == pytest.approx(off.mean(), rel=1e-10)
    assert pred["C44"] == pytest.approx(np.trace(c[3:, 3:]) / 3, rel=1e-10)
    np.testing.assert_allclose(pred["rdf"], w @ fr.fixed["rdf"], rtol=1e-10)

    expected = sum(sp.weights[k] * (pred[k] - sp.targets[k]) ** 2
                   for k in ("pressure", "pressure_c", "C11", "C12", "C44"))
    expected += sp.weights["rdf"] * np.mean((pred["rdf"] - sp.targets["rdf"][1]) ** 2)
    assert loss == pytest.approx(expected, rel=1e-10)


EXPANSION = np.array([2e-4, 3e-4, 4e-4, 0.0, 0.0, 0.0])  # 1/K: anisotropic, so a, c slopes differ


def test_reweighted_pressure_slopes(rattled):
    """Pressure slopes along a lattice expansion α (with one elastic target, C44, that reads no
    entry of the normal block): at θ ≠ θ̂ they equal −λ − B^T α written out in numpy (MPa/K), with
    the Born stiffness as full tensors and as every needed strain direction per frame; their
    loss's gradient equals a central finite difference."""
    sp0, fr, rw = rattled
    sp = dataclasses.replace(sp0, targets={"pressure_c_slope": 1.0, "pressure_a_slope": -2.0, "C44": 70.0},
                             weights={"pressure_c_slope": 0.5, "pressure_a_slope": 0.2, "C44": 1e-3},
                             expansion=EXPANSION)
    assert sp.stiffness_constants == ["C44", "C11", "C12"]
    theta = {"D": D0 * 1.04, "alpha": ALPHA0 * 0.98, "c": 0.1}
    loss, pred, ess, grad = rw.evaluate(theta, fr, sp)
    q = {k: np.asarray(v) for k, v in rw.quantities(theta, fr, True).items()}
    x = -(q["energy"] - fr.u_ref) / (units.KB * sp.temperature)
    w = np.exp(x - x.max())
    w /= w.sum()
    c, lam, _ = numpy_isothermal(q, w, fr, sp)
    slope = units.ev_per_a3_to_mpa(-(lam / sp.temperature + c @ EXPANSION))[:3]
    assert pred["pressure_c_slope"] == pytest.approx(slope[2], rel=1e-9)
    assert pred["pressure_a_slope"] == pytest.approx(slope[:2].mean(), rel=1e-9)
    assert pred["pressure_slope"] == pytest.approx(slope.mean(), rel=1e-9)
    assert abs(slope[2] - slope[:2].mean()) > 0.1  # the expansion's anisotropy shows
    fd_h = 1e-5 * theta["D"]
    up, down = ({**theta, "D": theta["D"] + d} for d in (fd_h, -fd_h))
    fd = (rw.evaluate(up, fr, sp, gradient=False)[0] - rw.evaluate(down, fr, sp, gradient=False)[0]) / (2 * fd_h)
    assert float(grad["D"]) == pytest.approx(fd, rel=1e-5)
    assert abs(fd) > 1e-3 * loss
    dirs = born_directions(sp.symmetry, sp.stiffness_constants)
    sp_all = dataclasses.replace(sp, born_directions=dirs.count)
    fr_all, _ = directional_frames(sp_all, fr, dirs.count)
    pred_all = rw.evaluate(theta, fr_all, sp_all, gradient=False)[1]
    for k in ("pressure_c_slope", "pressure_a_slope", "C44"):
        assert pred_all[k] == pytest.approx(pred[k], rel=1e-9), k
    with pytest.raises(ValueError, match="expansion"):
        dataclasses.replace(sp, expansion=None)


def test_rdf_bins_without_a_target_stay_out_of_the_loss_and_its_gradient(rattled):
    """An RDF target with NaN bins (outside a measured table): the loss is the mean square over
    the other bins, and its gradient is finite and equals the derivative of that loss
    (a central finite difference)."""
    sp, fr, rw = rattled
    rdf_only = dataclasses.replace(sp, targets={"rdf": sp.targets["rdf"]}, weights={"rdf": 1.0})
    r, g = rdf_only.targets["rdf"]
    theta = {"D": D0 * 1.02, "alpha": ALPHA0 * 0.99, "c": 0.05}
    _, pred, _, _ = rw.evaluate(theta, fr, rdf_only, gradient=False)
    g_nan = np.where(np.arange(len(g)) < len(g) // 3, np.nan, g)
    holed = dataclasses.replace(rdf_only, targets={"rdf": (r, g_nan)})
    loss, _, _, grad = rw.evaluate(theta, fr, holed)
    use = np.isfinite(g_nan)
    assert loss == pytest.approx(np.mean((np.asarray(pred["rdf"])[use] - g[use]) ** 2), rel=1e-10)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree_util.tree_leaves(grad))
    h = 1e-5 * theta["D"]
    up, down = ({**theta, "D": theta["D"] + d} for d in (h, -h))
    fd = (rw.evaluate(up, fr, holed, gradient=False)[0] - rw.evaluate(down, fr, holed, gradient=False)[0]) / (2 * h)
    assert float(grad["D"]) == pytest.approx(fd, rel=1e-5)


def test_batched_gradient_equals_one_pass_grad(rattled):
    """The two-pass, batched (7 frames a batch, remainder 2) gradient equals jax.grad of the same
    loss computed over all frames at once, at a θ where the weights matter."""
    sp, fr, rw = rattled
    theta = {"D": D0 * 1.03, "alpha": ALPHA0 * 0.985, "c": 0.2}
    loss, pred, ess, grad = rw.evaluate(theta, fr, sp)
    assert ess < 0.95

    q_all = jax.vmap(frame_quantities(shifted_morse, True), (None, 0, None, 0))
    u_ref = jnp.asarray(fr.u_ref)

    def one_pass(params):
        q = q_all(params, jnp.asarray(fr.positions), jnp.asarray(fr.box), fr.graphs)
        w = reweighting_weights(q["energy"], u_ref, sp.temperature)
        return state_loss(predictions(q, fr.fixed, w, sp), sp)

    value, ref = jax.jit(jax.value_and_grad(one_pass))(theta)
    assert loss == pytest.approx(float(value), rel=1e-12)
    for k in ("D", "alpha"):
        assert float(grad[k]) == pytest.approx(float(ref[k]), rel=1e-9), k
        assert abs(float(ref[k])) > 1e-3 * abs(float(value))  # a non-trivial gradient
    assert abs(float(grad["c"])) < 1e-9 * abs(float(value)) and abs(float(ref["c"])) < 1e-9 * abs(float(value))


def test_single_batch_program_equals_two_pass(rattled):
    """All frames in one batch: the loss and gradient of the single compiled program (the state
    point passed as arrays) equal the two-pass batched ones, also at a second temperature that
    reuses the program (a temperature baked into it would give the first one's answer)."""
    sp, fr, rw = rattled
    one = Reweighter(shifted_morse, batch_frames=N_FRAMES)
    theta = {"D": D0 * 1.03, "alpha": ALPHA0 * 0.985, "c": 0.2}
    for temperature in (T_EXACT, 0.7 * T_EXACT):
        sp_t = dataclasses.replace(sp, temperature=temperature)
        loss, pred, ess, grad = rw.evaluate(theta, fr, sp_t)
        loss1, pred1, ess1, grad1 = one.evaluate(theta, fr, sp_t)
        assert ess < 0.95 and ess1 == pytest.approx(ess, rel=1e-10)
        assert loss1 == pytest.approx(loss, rel=1e-10)
        for k in ("pressure", "C11", "C12", "C44"):
            assert pred1[k] == pytest.approx(pred[k], rel=1e-10), k
        np.testing.assert_allclose(pred1["rdf"], pred["rdf"], rtol=1e-10)
        for k in ("D", "alpha"):
            assert float(grad1[k]) == pytest.approx(float(grad[k]), rel=1e-9), k
    assert len(one._one_pass.compiled) == 1


def directional_frames(sp, fr, per_frame, offset=0, n_frames=None, slopes=None):
    """``fr`` (first ``n_frames``) carrying ``per_frame`` Born strain directions each, assigned from
    ``offset``, with control-variate ``slopes`` (D, 3) if given."""
    n = len(fr.positions) if n_frames is None else n_frames
    fr = subset(fr, slice(0, n))
    dirs = born_directions(sp.symmetry, sp.stiffness_constants)
    index = dirs.assign(n, per_frame, offset)
    fixed = dict(fr.fixed, born_index=index, born_vectors=dirs.vectors[index])
    if slopes is not None:
        fixed["born_slopes"] = slopes
    return dataclasses.replace(fr, fixed=fixed), dirs


def test_born_directions_reconstruct_the_needed_entries():
    """The hexagonal constants read 9 entries of Cᴮ; the directions e_a, e_a + e_b recover them
    from dᵀ C d exactly, and leave the entries no target reads at zero."""
    dirs = born_directions("hexagonal", ["C11", "C33", "C44", "C12", "C13"])
    assert dirs.count == 9
    c = np.random.default_rng(3).normal(size=(6, 6))
    c = c + c.T
    y = np.einsum("di,ij,dj->d", dirs.vectors, c, dirs.vectors)
    got = np.asarray(dirs.mean_stiffness(jnp.asarray(y)[None], np.arange(dirs.count)[None]))
    read = np.zeros((6, 6), bool)
    for a, b in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (0, 1), (0, 2), (1, 2)]:
        read[a, b] = read[b, a] = True
    np.testing.assert_allclose(got[read], c[read], rtol=1e-12)
    assert np.all(got[~read] == 0.0)
    with pytest.raises(ValueError, match="cannot cover the 9 directions"):
        dirs.assign(3, 2)


def test_directional_born_with_every_direction_equals_full_tensor(rattled):
    """Every frame along every needed direction: loss, predictions and the gradient (through
    the directional vector-Jacobian product) equal the full-tensor path's to round-off, at a θ
    where the weights matter."""
    sp, fr, rw = rattled
    theta = {"D": D0 * 1.03, "alpha": ALPHA0 * 0.985, "c": 0.2}
    dirs = born_directions(sp.symmetry, sp.elastic_targets)
    fr_d, _ = directional_frames(sp, fr, dirs.count)
    sp_d = dataclasses.replace(sp, born_directions=dirs.count)
    loss, pred, ess, grad = rw.evaluate(theta, fr, sp)
    loss_d, pred_d, ess_d, grad_d = rw.evaluate(theta, fr_d, sp_d)
    assert ess < 0.95 and ess_d == pytest.approx(ess, rel=1e-12)
    assert loss_d == pytest.approx(loss, rel=1e-10)
    for k in ("pressure", "C11", "C12", "C44"):
        assert pred_d[k] == pytest.approx(pred[k], rel=1e-10), k
    for k in ("D", "alpha"):
        assert float(grad_d[k]) == pytest.approx(float(grad[k]), rel=1e-8), k
    assert abs(float(grad_d["c"])) < 1e-9 * abs(loss)


@pytest.mark.parametrize("control_variates", [False, True])
def test_directional_born_one_direction_per_frame(rattled, control_variates):
    """One direction per frame: the gradient equals jax.grad of the same (stratified) loss
    written directly, and the constants averaged over the D assignments equal the exact ones at
    uniform weights (the estimator adds noise, not bias), without and with control variates of
    any fixed slopes (their gradient runs through the Born stresses)."""
    sp, fr, rw = rattled
    dirs = born_directions(sp.symmetry, sp.elastic_targets)
    n = (len(fr.positions) // dirs.count) * dirs.count
    sp1 = dataclasses.replace(sp, born_directions=1)
    theta = {"D": D0 * 1.03, "alpha": ALPHA0 * 0.985, "c": 0.2}
    slopes = np.random.default_rng(5).normal(scale=20.0, size=(dirs.count, 3)) if control_variates else None
    fr1, _ = directional_frames(sp, fr, 1, offset=2, n_frames=n, slopes=slopes)
    loss, pred, ess, grad = rw.evaluate(theta, fr1, sp1)
    q_all = jax.vmap(directional_quantities(shifted_morse), (None, 0, None, 0, 0))

    def one_pass(params):
        q = q_all(params, jnp.asarray(fr1.positions), jnp.asarray(fr1.box), fr1.graphs,
                  jnp.asarray(fr1.fixed["born_vectors"]))
        w = reweighting_weights(q["energy"], jnp.asarray(fr1.u_ref), sp1.temperature)
        return state_loss(predictions(q, fr1.fixed, w, sp1), sp1)

    value, ref = jax.jit(jax.value_and_grad(one_pass))(theta)
    assert loss == pytest.approx(float(value), rel=1e-12)
    for k in ("D", "alpha"):
        assert float(grad[k]) == pytest.approx(float(ref[k]), rel=1e-9), k

    if control_variates:  # the correction changes the estimate of this assignment
        plain = rw.evaluate(theta, directional_frames(sp, fr, 1, offset=2, n_frames=n)[0], sp1, gradient=False)[1]
        assert abs(plain["C11"] - pred["C11"]) > 1e-3 * abs(plain["C11"])
    exact = rw.evaluate(THETA0_C, subset(fr, slice(0, n)), sp, gradient=False)[1]
    per_offset = [rw.evaluate(THETA0_C, directional_frames(sp, fr, 1, offset=o, n_frames=n, slopes=slopes)[0],
                              sp1, gradient=False)[1] for o in range(dirs.count)]
    for k in ("C11", "C12", "C44"):
        values = np.array([p[k] for p in per_offset])
        assert values.mean() == pytest.approx(exact[k], rel=1e-10), k
        assert np.std(values) > 1e-6 * abs(exact[k])  # one offset alone is not the exact mean


def test_born_fit_matches_least_squares_and_its_control_variates_remove_the_stress_noise():
    """``fit_update`` and ``fit_pool`` over five trajectories give the slopes of one least-squares
    fit of all their frames with an intercept per trajectory (second method: numpy's lstsq); with
    slopes fitted on earlier frames, the estimate of ⟨y_d⟩ on new frames (directional
    stiffnesses linear in the normal stresses plus small noise) averages over the D assignments
    to the exact mean, and its spread over them falls from the stresses' noise to the small
    noise."""
    dirs = born_directions("hexagonal", ["C11", "C33", "C44", "C12", "C13"])
    d, rng = dirs.count, np.random.default_rng(11)
    beta = rng.normal(scale=30.0, size=(d, 3))
    mu = rng.uniform(1.0, 3.0, size=d)

    def frames(n):
        stress = 0.02 + 0.003 * rng.normal(size=(n, 6))
        y_all = mu + stress[:, :3] @ beta.T + 1e-3 * rng.normal(size=(n, d))
        return stress, y_all

    fits, xs, ys, idx, trajectory = [], [], [], [], []
    for offset, n in enumerate((27, 40, 13, 90, 60)):
        stress, y_all = frames(n)
        stress[:, :3] += 0.01 * offset  # trajectories of other means: the intercepts take them
        y_all += 0.3 * offset
        index = dirs.assign(n, 1, offset)
        y = np.take_along_axis(y_all, index, axis=1)
        fits.append(fit_update(fit_init(d), y, index, stress))
        xs.append(stress[:, :3]), ys.append(y[:, 0]), idx.append(index[:, 0]), trajectory.append(np.full(n, offset))
    fit = fit_pool([fit_pool(fits[:2]), *fits[2:]])  # pooled in two steps: the sums associate
    x, y, index, trajectory = (np.concatenate(a) for a in (xs, ys, idx, trajectory))
    unshrunk, slopes = fit_slopes(fit, prior_frames=0.0), fit_slopes(fit)
    for k in range(d):
        m = index == k
        intercepts = (trajectory[m][:, None] == np.arange(5)).astype(float)
        ref = np.linalg.lstsq(np.c_[intercepts, x[m]], y[m], rcond=None)[0][5:]
        np.testing.assert_allclose(unshrunk[k], ref, rtol=1e-3)
        # shrunk by a ridge of one frame's mean covariate variance, from the frames centred per trajectory
        centred = [(x[m & (trajectory == t)] - x[m & (trajectory == t)].mean(0),
                    y[m & (trajectory == t)] - y[m & (trajectory == t)].mean()) for t in range(5)]
        xc, yc = np.concatenate([c[0] for c in centred]), np.concatenate([c[1] for c in centred])
        gram = xc.T @ xc
        shrunk = np.linalg.solve(gram + np.trace(gram) / (3 * m.sum()) * np.eye(3), xc.T @ yc)
        np.testing.assert_allclose(slopes[k], shrunk, rtol=1e-3)
        assert np.linalg.norm(slopes[k]) < np.linalg.norm(ref)
    np.testing.assert_allclose(unshrunk, beta, atol=0.5)  # the noise of y over that of x: ~0.1
    assert np.all(fit_slopes(fit, min_frames=100) == 0.0)  # too few frames: no correction

    stress, y_all = frames(9 * 8)
    exact = dirs.to_stiffness @ y_all.mean(0)
    spread = {}
    for name, s in (("plain", None), ("control variates", slopes)):
        est = []
        for offset in range(d):
            index = dirs.assign(len(y_all), 1, offset)
            y = jnp.asarray(np.take_along_axis(y_all, index, axis=1))
            est.append(np.asarray(dirs.mean_stiffness(y, index, None, jnp.asarray(stress), s)).ravel())
        np.testing.assert_allclose(np.mean(est, axis=0), exact, atol=1e-12)
        spread[name] = np.std(est, axis=0).max()
    assert spread["control variates"] < 0.1 * spread["plain"]


def test_state_point_validation():
    """Unknown targets for the symmetry, a target without a loss weight and an unknown symmetry
    raise ValueError naming the state point."""
    with pytest.raises(ValueError, match=r"state point bad-cu.*unknown targets.*C33"):
        state_point(300.0, {"C11": 1.0, "C33": 2.0}, name="bad-cu")
    with pytest.raises(ValueError, match=r"state point bad-cu.*no loss weight.*C44"):
        state_point(300.0, {"C11": 1.0, "C44": 2.0}, {"C11": 1.0}, name="bad-cu")
    with pytest.raises(ValueError, match=r"state point bad-cu.*symmetry"):
        pos, box = fcc_cell()
        StatePoint("bad-cu", 300.0, pos, box, np.zeros(len(pos), int), np.full(len(pos), CU),
                   {"C11": 1.0}, {"C11": 1.0}, symmetry="tetragonal")
    sp = state_point(300.0, {"pressure": 0.0, "C44": 1.0})
    assert sp.needs_born and sp.elastic_targets == ["C44"]


# --- the DiffTRe gradient against finite differences of independent simulations --------------------

T_MD = 600.0  # K
SKIP = 0.1  # fraction of frames discarded for equilibration
N_BLOCKS = 10  # blocks for the statistical errors (each ≫ the ~0.1 ps correlation time)


def subset(fr: Frames, sel) -> Frames:
    return Frames(fr.positions[sel], fr.box, jax.tree_util.tree_map(lambda x: x[sel], fr.graphs),
                  fr.u_ref[sel], {k: v[sel] for k, v in fr.fixed.items()})


def blocks(n_frames):
    size = n_frames // N_BLOCKS
    return [slice(b * size, (b + 1) * size) for b in range(N_BLOCKS)]


def mean_and_error(full, per_block):
    """The full-run value with the standard error of the block values."""
    return float(full), float(np.std(per_block, ddof=1) / np.sqrt(len(per_block)))


class Ensemble:
    """NVT (Langevin) runs of the Morse crystal at any θ with one compiled simulator."""

    def __init__(self, rw, steps, record_every=20):
        self.pos, self.box = fcc_cell()
        self.masses = np.full(len(self.pos), CU)
        s = MDSettings(thermostat=Thermostat("langevin", temperature=T_MD, friction_per_ps=20.0),
                       timestep_fs=2.0, steps=steps, record_every=record_every, chunk=2500)
        self.sim = Simulator(shifted_morse, self.masses, s,
                             NeighborGraph(R_OFF, skin=1.0, max_images=0))  # host tables
        self.rw = rw

    def frames(self, theta, seed, sp):
        tr = self.sim.run(jnp.asarray(self.pos), self.box, params=theta, seed=seed,
                          progress=lambda m: None)
        k = int(SKIP * len(tr.energies))
        pos, mom, u = tr.positions[k:], tr.momenta[k:], tr.energies[k:]
        return make_frames(pos, mom, self.masses, self.box, graphs_of(pos, self.box), u, sp)

    def pressure_frames(self, theta, fr, kinetic=True):
        """Instantaneous pressure (GPa) per frame: kinetic part minus the Born stress."""
        q = self.rw.quantities(theta, fr, True)
        v = abs(np.linalg.det(self.box))
        p = kinetic * np.einsum("fii->fi", fr.fixed["kinetic"]) / v - np.asarray(q["born_stress"])[:, :3]
        return units.ev_per_a3_to_gpa(p.mean(1))

    def averages(self, theta, fr, sp):
        """Plain (unweighted) averages of the observables of ``sp``: the whole run and per block."""
        q = self.rw.quantities(theta, fr, True)

        def pred(sel):
            n = len(fr.positions[sel])
            return predictions({k: v[sel] for k, v in q.items()}, {k: v[sel] for k, v in fr.fixed.items()},
                               jnp.full(n, 1.0 / n), sp)

        full, per_block = pred(slice(None)), [pred(b) for b in blocks(len(fr.positions))]
        return {k: mean_and_error(full[k], [p[k] for p in per_block]) for k in sp.targets}


def difftre_vs_fd(rw, steps, name, h, observables=("pressure",), seeds=(11, 12, 13)):
    """dO/dα by DiffTRe on one run at α̂ and by a central difference of two more, independent
    runs at α̂ ± h, each with a block error. For the pressure also the two parts of the DiffTRe
    gradient, ⟨∂P/∂α⟩ (Born) and −β cov(P, ∂U/∂α) (weights)."""
    t0 = time.time()
    ens = Ensemble(rw, steps)
    sp_all = state_point(T_MD, {k: 0.0 for k in observables}, name=name)
    fr = ens.frames(THETA0_C, seeds[0], sp_all)
    out = {"frames": len(fr.positions)}

    for obs in observables:
        # loss = (O − 0)² → ∂L/∂α = 2 O ∂O/∂α
        sp = state_point(T_MD, {obs: 0.0}, name=f"{name}-{obs}")
        _, pred, ess, grad = rw.evaluate(THETA0_C, fr, sp)
        assert ess == pytest.approx(1.0, abs=1e-12)  # the MD energies are the reweighter's
        g = float(grad["alpha"]) / (2.0 * pred[obs])
        if obs != "pressure":
            per_block = []
            for b in blocks(len(fr.positions)):
                _, pb, _, gb = rw.evaluate(THETA0_C, subset(fr, b), sp)
                per_block.append(float(gb["alpha"]) / (2.0 * pb[obs]))
            out[obs] = {"difftre": mean_and_error(g, per_block)}
            continue
        # the same gradient from per-frame derivatives, ⟨∂P/∂α⟩ − β cov(P_conf, ∂U/∂α), with the
        # per-frame derivatives by central differences (independent of the autodiff above); the
        # kinetic part does not depend on α and is not reweighted
        p = ens.pressure_frames(THETA0_C, fr, kinetic=False)
        delta = 1e-5
        up, um = dict(THETA0_C, alpha=ALPHA0 + delta), dict(THETA0_C, alpha=ALPHA0 - delta)
        dp = (ens.pressure_frames(up, fr) - ens.pressure_frames(um, fr)) / (2 * delta)
        du = (rw.energies(up, fr) - rw.energies(um, fr)) / (2 * delta)
        beta = 1.0 / (units.KB * T_MD)

        def born_part(x):
            return x[:, 1].mean()

        def weight_part(x):
            return -beta * np.mean((x[:, 0] - x[:, 0].mean()) * (x[:, 2] - x[:, 2].mean()))

        series = np.c_[p, dp, du]
        born, weight = born_part(series), weight_part(series)
        assert born + weight == pytest.approx(g, rel=1e-6)
        err = block_estimate(lambda x: born_part(x) + weight_part(x), series, N_BLOCKS)[1]
        out[obs] = {"difftre": (g, err), "born": born, "weight": weight, "value": pred[obs]}

    runs = []
    for sign, seed in ((+1, seeds[1]), (-1, seeds[2])):
        theta = dict(THETA0_C, alpha=ALPHA0 + sign * h)
        runs.append(ens.averages(theta, ens.frames(theta, seed, sp_all), sp_all))
    for obs in observables:
        (o_plus, e_plus), (o_minus, e_minus) = runs[0][obs], runs[1][obs]
        out[obs]["fd"] = ((o_plus - o_minus) / (2 * h), np.hypot(e_plus, e_minus) / (2 * h))
    out["seconds"] = time.time() - t0
    return out


def check_against_fd(r, obs, slack):
    (g, err_g), (fd, err_fd) = r[obs]["difftre"], r[obs]["fd"]
    sigma = np.hypot(err_g, err_fd)
    parts = f" (Born {r[obs]['born']:.3f}, weights {r[obs]['weight']:.3f})" if "born" in r[obs] else ""
    print(f"\n d{obs}/dα: DiffTRe {g:.3f} ± {err_g:.3f}{parts}; FD {fd:.3f} ± {err_fd:.3f} GPa·Å; "
          f"{r['frames']} frames; {r['seconds']:.0f} s")
    # agreement within the combined statistical error (+ slack for the O(h²) bias of the FD)
    assert abs(g - fd) < 3 * sigma + slack
    assert abs(fd) > 20 * sigma  # the derivative is resolved: not two numbers ≈ 0
    if "born" in r[obs]:
        # the test can fail: leaving out the reweighting (weight) term, or the explicit θ
        # dependence of the Born stress, would be detected
        assert abs(r[obs]["born"] - fd) > 3 * sigma + slack
        assert abs(r[obs]["weight"] - fd) > 3 * sigma + slack


def test_difftre_pressure_gradient_matches_finite_difference(rw):
    """dP/dα of the Morse crystal at 600 K: DiffTRe on one 10⁴-step run (2 fs) vs the central
    difference of two independent 10⁴-step runs at α ± 0.03 Å⁻¹ (2 %)."""
    r = difftre_vs_fd(rw, steps=10_000, name="cu-600K", h=0.03)
    check_against_fd(r, "pressure", slack=0.1)


@pytest.mark.slow
def test_difftre_gradients_match_finite_difference_long(rw):
    """Pressure, C11 and C44 with 6× longer runs and a smaller step (tighter errors, smaller
    finite-difference bias); C11 and C44 carry the third-order fluctuation terms of the
    stress-fluctuation formula."""
    r = difftre_vs_fd(rw, steps=60_000, name="cu-600K-long", h=0.02,
                      observables=("pressure", "C11", "C44"))
    for obs, slack in (("pressure", 0.05), ("C11", 1.0), ("C44", 1.0)):
        check_against_fd(r, obs, slack)
