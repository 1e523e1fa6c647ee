"""The transport kit: one home for moving payloads, which every transport composes.

A transport is a control plane (gRPC for ``grpc`` and ``grpc+verbs``) plus *movers*, the
faster ways two peers agree on to move payload bytes. What they share lives here, once:

- ``framing``: the frame and manifest format, receive-memory layout, and the one size check
  of every path (``check_frames``, ``check_size``) with one wording.
- ``pool``: the one recycling receive-buffer pool, with one ownership rule (a buffer is
  reused only when the pool holds its last reference); RDMA registers its buffers through
  the same pool.
- ``tickets``: the one time-limited ticket store (pushed requests, parked responses, RDMA
  leases).
- ``address``: the one target parser (``split_address``) and its inverse.
- ``handshake``: how two peers agree on the fastest mover both have.
- ``routes``: which route a request and a response take, as pure functions.
- ``copying``: large copies shared between the caller and the process's copy helpers.
- ``spinning``: how a waiting thread tries for a while before it sleeps (``Spinner``).

Nothing here imports gRPC or a mover's library: the kit is plain Python and NumPy, so each
piece is tested on its own. A new mover (shared memory, a lean path for small calls) plugs
in by adding its name to ``handshake.MOVER_PREFERENCE``, offering itself in the handshake,
and executing the routes ``routes`` hands it; limits, tickets and buffers it takes from here.
"""
