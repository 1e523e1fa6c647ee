"""Feeding a JAX training loop from the tf.data service.

    python examples/dataservice_jax.py [--service grpc://localhost:5050]

Without ``--service`` a dispatcher and a worker start in this process. Each NumPy batch
from the service goes to the device with ``jax.device_put``; on CPU, JAX may use the NumPy
buffer directly, so the only copy is the wire's.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import tensorwire as tw


def make_pipeline(num_examples: int, batch_size: int):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_examples, 4)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 3.0], np.float32) + np.float32(0.1)
    return tw.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)


@jax.jit
def step(params, x, y):
    def loss(p):
        return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)

    value, grads = jax.value_and_grad(loss)(params)
    return jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, grads), value


def train(service: str, epochs: int = 3) -> float:
    dataset = make_pipeline(2048, 64).apply(tw.data.service.distribute("parallel_epochs", service))
    params = {"w": jnp.zeros(4), "b": jnp.zeros(())}
    value = jnp.inf
    for _ in range(epochs):
        for x, y in dataset.as_numpy_iterator():
            params, value = step(params, jax.device_put(x), jax.device_put(y))
    print(f"final loss {float(value):.4f}, w={np.round(np.asarray(params['w']), 2)}")
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default=None, help="dispatcher target; default: local")
    parser.add_argument("--protocol", default="grpc")
    args = parser.parse_args()
    local = None
    if args.service is None:  # a dispatcher and 1 worker in this process
        local = tw.test.create_local_data_service(num_workers=1, protocol=args.protocol)
    try:
        train(args.service or local.target)
    finally:
        if local is not None:
            local.stop()


if __name__ == "__main__":
    main()
