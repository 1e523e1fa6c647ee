"""The tf.data service seed example: a dispatcher, a worker, and a dataset read through them.

    python examples/dataservice_basic.py

Prints [0, 1, ..., 9]: the range is produced by the worker and streamed to this process.
"""

import tensorwire as tw

dispatcher = tw.data.service.DispatchServer()
dispatcher_address = dispatcher.target.split("://")[1]
worker = tw.data.service.WorkerServer(
    tw.data.service.WorkerConfig(dispatcher_address=dispatcher_address)
)
dataset = tw.data.Dataset.range(10)
dataset = dataset.apply(
    tw.data.service.distribute(processing_mode="parallel_epochs", service=dispatcher.target)
)
print([int(x) for x in dataset.as_numpy_iterator()])
