"""Read a dataset through a running tf.data service and check that every element arrived.

    python examples/dataservice_reader.py --service grpc://dispatcher:5050 --elements 1000

The pipeline (``range -> map``) runs on the service's workers in ``distributed_epoch``
mode, so each element is produced once across all of them; this reader checks it received
each exactly once. The deployment recipes run it as
their data-service check (deploy/kubernetes/data-reader-job.yaml, examples/slurm/); the
token and TLS settings come from the ``TENSORWIRE_*`` environment variables.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import tensorwire as tw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", required=True, help="grpc://host:port of the dispatcher")
    parser.add_argument("--elements", type=int, default=1000)
    args = parser.parse_args(argv)

    dataset = tw.data.Dataset.range(args.elements).map(lambda i: (i, np.int64(i) * i))
    dataset = dataset.apply(
        tw.data.service.distribute(processing_mode="distributed_epoch", service=args.service)
    )
    seen = sorted(int(i) for i, square in dataset.as_numpy_iterator() if square == i * i)
    if seen != list(range(args.elements)):
        missing = sorted(set(range(args.elements)) - set(seen))
        print(
            f"read {len(seen)} elements, expected {args.elements}: "
            f"missing {missing[:10]}, duplicated {len(seen) - len(set(seen))}",
            file=sys.stderr,
        )
        return 1
    print(f"read {len(seen)} elements through {args.service}, each exactly once", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
