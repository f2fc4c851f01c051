"""Compile an MDF file or ``modeci_mdf`` Model once into a runnable numpy plan.

``compile_mdf(src)`` reads the MDF graph with the MDF frontend (the safe subset: no
``eval``, expressions through the allow-list compiler), optimises it with the ``default``
pipeline, converts it to channels-last (the numpy convolution kernels work channels-last
internally, so an NCHW plan would transpose around every conv), and compiles it into a
:class:`~ir_bridge.engine.plan.Plan`: kernels bound to slots in topological order, each
value freed after its last use. Run it as often as you like::

    plan = compile_mdf("model.json")
    probs = plan.run([images])[0]

Two things make the plan faster than the generic interpreter, with the same arithmetic:

* Gemm, Conv and MaxPool steps use the chunked kernels of
  :func:`ir_bridge.ops.nn.fused_kernel`, which apply a fused ReLU (or a final Softmax) in
  place on each chunk while it is in cache, instead of sweeping the whole output again; a
  Conv read only by a MaxPool is computed and pooled chunk by chunk, so the full-size conv
  output is never stored;
* the batch chunks of Conv and MaxPool are spread over a small thread pool (one worker per
  core), with the BLAS library held to one thread meanwhile, so the im2col copies,
  activations and pooling run in parallel too, not only the GEMMs. Workers claim chunks
  one at a time, so a worker preempted by another process delays only its current chunk.
  A Gemm is one BLAS call, with BLAS's threads when it is large and one thread when small.
  Without ``threadpoolctl`` (which can hold BLAS to one thread) the chunks run in order and
  BLAS keeps its own threads.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .plan import Plan

#: What ``compile_mdf(optimize=True)`` runs before planning.
OPTIMIZE_PASSES = ["default"]


class _SingleBlasThread:
    """Holds BLAS libraries to one thread while our workers are the parallelism, then
    restores them (nested and concurrent uses are counted). Needs threadpoolctl; ``libs``
    is empty without it."""

    def __init__(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            self.libs = []
        else:
            self.libs = [lib for lib in ThreadpoolController().lib_controllers
                         if lib.user_api == "blas"]
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: list[int] = []

    def __enter__(self):
        with self.lock:
            if self.depth == 0:
                self.saved = [lib.num_threads for lib in self.libs]
                for lib in self.libs:
                    lib.set_num_threads(1)
            self.depth += 1
        return self

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for lib, n in zip(self.libs, self.saved):
                    lib.set_num_threads(n)


class _Workers:
    """A process-wide pool running ``work(items)`` with one worker per core (the calling
    thread is one), BLAS held to one thread meanwhile.

    Items are *claimed* one at a time from a shared counter, so a worker the OS preempts
    (another process on the core) holds up at most the item it is on: the others take the
    rest. With BLAS's own threads, a GEMM waits for its preempted thread a whole time slice
    (8 ms for a 2-MFLOP product); with static shares, the whole share would wait."""

    def __init__(self, n: int, blas: _SingleBlasThread):
        self.n = n
        self.blas = blas
        self.pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="ir_bridge") \
            if n > 1 else None

    def __call__(self, work, items) -> None:
        with self.blas:
            if len(items) < 2 or self.pool is None:
                work(items)
                return
            counter = itertools.count()  # next() on it is atomic under the GIL

            def claimed():
                while (i := next(counter)) < len(items):
                    yield items[i]

            futures = [self.pool.submit(work, claimed())
                       for _ in range(min(self.n, len(items)) - 1)]
            try:
                work(claimed())
            finally:
                for f in futures:
                    f.result()


_BLAS: _SingleBlasThread | None = None
_POOLS: dict[int, _Workers] = {}
_POOLS_LOCK = threading.Lock()


def _workers(threads: int | None) -> _Workers | None:
    """The shared worker pool of ``threads`` workers (default: one per core; 1: the caller
    alone); None when BLAS cannot be held to one thread (then chunks run in order and BLAS
    keeps its own threads). One BLAS guard serves every pool, so plans run concurrently
    agree on when to restore BLAS."""
    global _BLAS
    n = max(1, threads if threads is not None else (os.cpu_count() or 1))
    with _POOLS_LOCK:
        if _BLAS is None:
            _BLAS = _SingleBlasThread()
        if not _BLAS.libs:
            return None
        if n not in _POOLS:
            _POOLS[n] = _Workers(n, _BLAS)
        return _POOLS[n]


class MdfPlan(Plan):
    """A :class:`Plan` compiled from MDF; ``graph`` is the IR it runs, ``notes`` what the
    frontend read leniently, ``baked_inputs`` input data a file stored in parameters
    (modeci_mdf's Keras importer does), by input name."""

    def __init__(self, graph, notes=(), baked_inputs=None, threads: int | None = None):
        super().__init__(graph)
        self.graph = graph
        self.notes = list(notes)
        self.baked_inputs = dict(baked_inputs or {})
        self._workers = _workers(threads)
        self._use_fast_kernels()

    def _use_fast_kernels(self) -> None:
        from ..ops.nn import fused_kernel

        g = self.graph
        steps = []
        i = 0
        while i < len(self.steps):
            step = self.steps[i]
            node = g.node(step.name)
            nxt = self.steps[i + 1] if i + 1 < len(self.steps) else None
            # Conv -> MaxPool, the pool alone reading the conv: one pass, the conv output
            # never stored. The pooled value takes the pool's slot.
            if (nxt is not None and node.op == "Conv" and nxt.op == "MaxPool"
                    and nxt.args == (step.out,) and not g.is_output(node)
                    and [u.name for u in g.users(node)] == [nxt.name]):
                fn = fused_kernel(node, self._workers, pool=g.node(nxt.name))
                if fn is not None:
                    steps.append(dataclasses.replace(
                        step, op="Conv+MaxPool", fn=fn, out=nxt.out,
                        free=tuple(f for f in (*step.free, *nxt.free) if f != step.out)))
                    i += 2
                    continue
            if node.op == "Gemm":
                fn = fused_kernel(node)
                if self._workers is not None:
                    fn = _gemm_threads(fn, node.params["W"], self._workers)
            else:
                fn = fused_kernel(node, self._workers)
            steps.append(step if fn is None else dataclasses.replace(step, fn=fn))
            i += 1
        self.steps = steps


#: A Gemm of at least this many multiply-adds keeps BLAS's own threads.
GEMM_THREADED_MACS = 32 << 20


def _gemm_threads(fn, w, workers):
    """A Gemm is one BLAS call (row blocks would each repack the weights: 3x slower on the
    MNIST MLPs). A large one keeps BLAS's own threads; a small one, or any in a plan asked
    for one thread, runs on one: splitting it gains little, and on a busy machine costs a
    scheduler time slice whenever a BLAS thread is preempted (0.3 ms became 30 ms)."""
    k, n = w.shape
    blas = workers.blas
    threaded = workers.n > 1

    def gemm(x):
        if threaded and (x.size // max(k, 1)) * k * n >= GEMM_THREADED_MACS:
            return fn(x)
        with blas:
            return fn(x)

    return gemm


def compile_mdf(src, *, optimize: bool = True, layout: str | None = "NHWC",
                threads: int | None = None) -> MdfPlan:
    """Compile ``src`` (an MDF ``.json``/``.yaml`` path or a ``modeci_mdf`` Model) into an
    :class:`MdfPlan`.

    With ``optimize`` the ``default`` pipeline runs (fusions, folding, dead code); ``layout``
    (``"NHWC"``, ``"NCHW"`` or None to keep the file's) picks the layout spatial ops run in;
    ``threads`` caps the worker threads (default: one per core; 1 runs everything on the
    calling thread, BLAS included). Raises the MDF frontend's errors for bad or unsafe
    files.
    """
    from ..frontends.mdf import load
    from ..passes import run_passes
    from ..passes.pipelines import LAYOUT_PASSES

    graph = load(src)
    graph.infer_shapes()
    graph.verify()
    notes = graph.meta.get("mdf_notes", [])
    baked = graph.meta.get("mdf_baked_inputs", {})
    passes = list(OPTIMIZE_PASSES) if optimize else []
    if layout is not None:
        passes += [LAYOUT_PASSES[layout], "dead-code"]
    if passes:
        graph = run_passes(graph, passes).graph
    return MdfPlan(graph, notes, baked, threads=threads)


def run_mdf(src, inputs) -> list:
    """Compile ``src`` and run it once on ``inputs``; returns the list of outputs."""
    return compile_mdf(src).run(inputs)
