"""Programs compiled under a lock (compilation.Program): the same results as jax.jit, one
compilation per signature, inlined inside other programs, and a compilation that waits while
another holder (another job) has the lock of the same program."""
import hashlib
import threading

import jax
import jax.numpy as jnp
import numpy as np

from fusedmlp import compilation
from fusedmlp.compilation import Program


def f(x, n, scale):
    return jax.lax.fori_loop(0, n, lambda i, y: jnp.sin(y) * scale + x, x)


def test_program_matches_jit_and_compiles_once_per_signature():
    prog = Program(f, static_argnums=(2,))
    x = jnp.linspace(0.0, 1.0, 5)
    for n in (3, 4):  # a traced integer: one program for both
        np.testing.assert_allclose(prog(x, n, 0.5), jax.jit(f, static_argnums=2)(x, n, 0.5), rtol=1e-6)
    assert len(prog.compiled) == 1
    prog(x, 3, 0.7)  # another static value
    prog(jnp.ones(6), 3, 0.5)  # another shape
    assert len(prog.compiled) == 3
    # called inside another program it is traced into that program, not run as a compiled object
    t = jnp.ones_like(x)
    outer = jax.jit(lambda x: jax.jvp(lambda y: prog(y, 3, 0.5), (x,), (t,))[1])
    ref = jax.jvp(lambda y: f(y, 3, 0.5), (x,), (t,))[1]
    np.testing.assert_allclose(outer(x), ref, rtol=1e-6)


def test_compilation_waits_for_the_holder_of_the_programs_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(compilation, "cache_dir", lambda: tmp_path)
    prog = Program(f, static_argnums=(2,))
    x = jnp.arange(4.0)
    lowered = prog.jitted.lower(x, 2, 1.5)
    digest = hashlib.sha256(lowered.as_text().encode()).hexdigest()[:24]
    held, released = threading.Event(), threading.Event()

    def other_job():
        with compilation._lock(tmp_path / "locks" / f"{digest}.lock"):
            held.set()
            released.wait(timeout=30)

    t = threading.Thread(target=other_job)
    t.start()
    held.wait(timeout=30)
    order = []
    done = threading.Thread(target=lambda: order.append(("compiled", prog(x, 2, 1.5))))
    done.start()
    done.join(timeout=2.0)
    assert done.is_alive() and not order  # blocked while the other job holds the lock
    order.append(("released", None))
    released.set()
    done.join(timeout=60)
    t.join(timeout=30)
    assert [o[0] for o in order] == ["released", "compiled"]
    np.testing.assert_allclose(order[1][1], f(x, 2, 1.5), rtol=1e-6)
