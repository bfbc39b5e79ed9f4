"""Radial and spherical basis functions of DimeNet (Gasteiger, Groß & Günnemann, ICLR 2020).

Distances enter scaled by the cutoff, x = d/c. The polynomial envelope u(x) (with its 1/x factor)
goes smoothly to zero with two vanishing derivatives at x = 1, so energies and forces are smooth
when atoms cross the cutoff.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from scipy import optimize, special


def envelope(x, p: int):
    """u(x) = 1/x + a x^(p−1) + b x^p + c x^(p+1) for x < 1, else 0 (DimeNet Eq. 8)."""
    a = -(p + 1) * (p + 2) / 2
    b = p * (p + 2)
    c = -p * (p + 1) / 2
    xp = x ** (p - 1)
    return jnp.where(x < 1.0, 1.0 / x + a * xp + b * xp * x + c * xp * x * x, 0.0)


def bessel_rbf(x, frequencies, p: int):
    """Radial basis u(x) sin(f_n x), with (trainable) frequencies initialised at nπ."""
    return envelope(x, p)[..., None] * jnp.sin(frequencies * x[..., None])


@functools.lru_cache(maxsize=None)
def spherical_bessel_roots(n_spherical: int, n_radial: int) -> np.ndarray:
    """z_ln: the first ``n_radial`` positive roots of j_l for l < ``n_spherical``."""
    roots = np.zeros((n_spherical, n_radial))
    roots[0] = np.arange(1, n_radial + 1) * np.pi
    grid = np.linspace(1e-3, (n_radial + n_spherical + 2) * np.pi, 20000)
    for l in range(1, n_spherical):
        f = special.spherical_jn(l, grid)
        sign_change = np.nonzero(np.sign(f[:-1]) * np.sign(f[1:]) < 0)[0]
        found = [optimize.brentq(lambda z: special.spherical_jn(l, z), grid[k], grid[k + 1])
                 for k in sign_change[: n_radial]]
        roots[l] = found
    return roots


def legendre(l_max: int, t):
    """P_0 … P_(l_max) at t = cos θ (Bonnet recurrence), stacked on the last axis."""
    out = [jnp.ones_like(t), t]
    for l in range(1, l_max):
        out.append(((2 * l + 1) * t * out[l] - l * out[l - 1]) / (l + 1))
    return jnp.stack(out[: l_max + 1], axis=-1)


@functools.lru_cache(maxsize=None)
def _jn_coefficients(n_spherical: int) -> tuple[np.ndarray, np.ndarray]:
    """j_l(x) = S_l(1/x) sin x + C_l(1/x) cos x with polynomials S_l, C_l (coefficients of
    (1/x)^p, p = 0 … L), from the recurrence j_(l+1) = (2l+1)/x j_l − j_(l−1)."""
    size = n_spherical + 1
    s = np.zeros((max(n_spherical, 2), size))
    c = np.zeros_like(s)
    s[0, 1] = 1.0  # j_0 = sin x / x
    s[1, 2], c[1, 1] = 1.0, -1.0  # j_1 = sin x / x² − cos x / x
    for l in range(1, n_spherical - 1):
        s[l + 1, 1:] = (2 * l + 1) * s[l, :-1]
        c[l + 1, 1:] = (2 * l + 1) * c[l, :-1]
        s[l + 1] -= s[l - 1]
        c[l + 1] -= c[l - 1]
    return s[:n_spherical], c[:n_spherical]


def sbf_radial(x, n_spherical: int, n_radial: int, p: int):
    """Radial part of DimeNet's 2D basis, u(x) N_ln j_l(z_ln x); shape (..., L, R).

    N_ln = √2 / |j_(l+1)(z_ln)| normalises the radial functions on [0, 1]. It depends on the
    distance of edge k→j only, so it is computed per edge. j_l is evaluated in closed form
    (sin and cos times polynomials in 1/x), which keeps its derivatives cheap.
    """
    z = spherical_bessel_roots(n_spherical, n_radial)  # (L, R)
    norm = np.sqrt(2.0) / np.abs(np.stack([special.spherical_jn(l + 1, z[l])
                                           for l in range(n_spherical)]))
    cs, cc = _jn_coefficients(n_spherical)  # (L, P)
    arg = x[..., None, None] * z  # (..., L, R)
    y = 1.0 / arg
    poly_s = jnp.zeros_like(arg)
    poly_c = jnp.zeros_like(arg)
    for k in range(cs.shape[1] - 1, -1, -1):  # Horner, highest power first
        poly_s = poly_s * y + cs[:, k, None]
        poly_c = poly_c * y + cc[:, k, None]
    jl = poly_s * jnp.sin(arg) + poly_c * jnp.cos(arg)
    return envelope(x, p)[..., None, None] * norm * jl


def sbf_angular(cos_angle, n_spherical: int):
    """Y_l^0(α) = √((2l+1)/4π) P_l(cos α); shape (..., L)."""
    return legendre(n_spherical - 1, cos_angle) * np.sqrt(
        (2 * np.arange(n_spherical) + 1) / (4 * math.pi))
