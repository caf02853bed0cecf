"""JAX reference of kanode's default training step, for experiments/bench_engine.py.

The default protocol written the way a JAX user would: a [2, 10, 2] B-spline KAN (grid 5,
cubic, dense Cox–de Boor bases on the extended uniform grid, SiLU base path, per-edge spline
scale), the input normalisation and output scale of kanode.ode.VectorField, classic RK4 in
its 3/8 form (torchdiffeq's ``rk4``) at the sampling interval in ``lax.scan``, MSE over the
training window, ``optax.adam`` and ``optax.lbfgs`` (zoom line search), all under
``jax.jit``, float64, ``vmap`` over M members.

Needs jax and optax only (``pip install -e .[experiments]``); the benchmark runs it in a
separate interpreter (``--jax-python``), so torch is not needed here.

Usage: python experiments/jax_reference.py DATA.npz M [M ...]  → one JSON line per M on stdout:
{"M": .., "compile_s": .., "adam_step_s": .., "lbfgs_step_s": ..}
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

WIDTHS, GRID, ORDER = (2, 10, 2), 5, 3


def bases(x, knots):
    """Cox–de Boor: x (..., in), knots (n_knots,) → (..., in, GRID + ORDER)."""
    x = x[..., None]
    b = ((x >= knots[:-1]) & (x < knots[1:])).astype(x.dtype)
    for k in range(1, ORDER + 1):
        left = (x - knots[: -(k + 1)]) / (knots[k:-1] - knots[: -(k + 1)]) * b[..., :-1]
        right = (knots[k + 1:] - x) / (knots[k + 1:] - knots[1:-k]) * b[..., 1:]
        b = left + right
    return b


def kan(params, x, knots):
    """x (batch, in) → (batch, out) through the layers."""
    for coef, scale, weight in params:
        spline = jnp.einsum("bij,oij->bo", bases(x, knots), coef * scale[..., None])
        x = jax.nn.silu(x) @ weight.T + spline
    return x


def init(key):
    params = []
    for a, b in zip(WIDTHS[:-1], WIDTHS[1:]):
        key, k1, k2 = jax.random.split(key, 3)
        params.append((0.1 * jax.random.normal(k1, (b, a, GRID + ORDER)), jnp.ones((b, a)),
                       jax.random.uniform(k2, (b, a), minval=-1, maxval=1) / jnp.sqrt(a)))
    return params


def make_loss(t, y, knots):
    """MSE of the RK4 solve over t (n_t,) against y (n_t, batch, dim)."""
    lo, hi = y.reshape(-1, y.shape[-1]).min(0), y.reshape(-1, y.shape[-1]).max(0)
    w_in = 2.0 / (hi - lo)
    b_in = -1.0 - w_in * lo
    out_scale = (jnp.diff(y, axis=0) / jnp.diff(t)[:, None, None]).reshape(-1, y.shape[-1]).std(0)
    dts = jnp.diff(t)

    def loss(params):
        def f(state):
            return kan(params, state * w_in + b_in, knots) * out_scale

        def step(state, dt):
            k1 = f(state)
            k2 = f(state + dt * k1 / 3)
            k3 = f(state + dt * (k2 - k1 / 3))
            k4 = f(state + dt * (k1 - k2 + k3))
            new = state + (k1 + 3 * (k2 + k3) + k4) * dt * 0.125
            return new, new

        _, states = jax.lax.scan(step, y[0], dts)
        return jnp.mean((states - y[1:]) ** 2)  # y[0] matches exactly, as kanode's does: same sum

    return loss


def median_time(fn, state, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(fn(state))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(t, y, n_members, repeats):
    knots = jnp.linspace(-1 - ORDER * 2 / GRID, 1 + ORDER * 2 / GRID, GRID + 2 * ORDER + 1)
    loss = make_loss(t, y, knots)
    members = jax.vmap(init)(jax.random.split(jax.random.PRNGKey(0), n_members))
    total = lambda p: jnp.sum(jax.vmap(loss)(p))  # noqa: E731 - each member's gradient is its own

    adam = optax.adam(1e-2)

    @jax.jit
    def adam_step(state):
        params, opt = state
        grads = jax.grad(total)(params)
        updates, opt = adam.update(grads, opt)
        return optax.apply_updates(params, updates), opt

    lbfgs = optax.lbfgs(memory_size=50)

    @jax.jit
    def lbfgs_step(state):
        def one(params, opt):
            value, grads = optax.value_and_grad_from_state(loss)(params, state=opt)
            updates, opt = lbfgs.update(grads, opt, params, value=value, grad=grads, value_fn=loss)
            return optax.apply_updates(params, updates), opt
        return jax.vmap(one)(*state)

    start = time.perf_counter()
    adam_state = jax.block_until_ready(adam_step((members, adam.init(members))))
    lbfgs_state = jax.block_until_ready(lbfgs_step((members, jax.vmap(lbfgs.init)(members))))
    compile_s = time.perf_counter() - start
    return {"M": n_members, "compile_s": compile_s,
            "adam_step_s": median_time(adam_step, adam_state, repeats),
            "lbfgs_step_s": median_time(lbfgs_step, lbfgs_state, repeats)}


def main(argv: list[str]) -> None:
    data = np.load(argv[0])
    t, y = jnp.asarray(data["t"]), jnp.asarray(data["y"])  # (n_t,), (n_t, batch, dim)
    repeats = int(data["repeats"])
    for n_members in map(int, argv[1:]):
        print(json.dumps(bench(t, y, n_members, repeats)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
