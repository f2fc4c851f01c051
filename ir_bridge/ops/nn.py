"""Kernels of the neural-network ops: Gemm, convolutions, pooling, normalisation, Gather.

Convolutions and pooling work channels-last internally: a strided *view* enumerates the
windows, one copy turns them into an im2col matrix, and one GEMM per batch chunk does the
arithmetic.  NCHW inputs are transposed in and out.  The batch is processed in chunks so
the im2col matrix stays near cache size instead of growing with the batch.

Speed notes (the MNIST benchmark in ``benchmarks/engine.py`` drives these):

* the im2col buffer is allocated once per call and refilled per chunk; it carries a column
  of ones so the bias rides inside the GEMM (no extra pass over the output), and the GEMM
  writes straight into the output (``matmul(out=)``);
* ``conv_kernel``/``gemm_kernel`` take an optional in-place *epilogue* (e.g. a fused ReLU)
  applied to each chunk while it is still in cache; :func:`fused_kernel` builds one for a
  node whose fused activation can run in place. ``kernel_for`` keeps applying fused
  activations itself, so the registered kernels use no epilogue;
* ``conv_kernel``/``max_pool_kernel`` also take a *parallel* runner,
  ``parallel(work, items)``, that may split the list of chunk starts among threads (numpy
  releases the GIL in copies, GEMMs and ufuncs). The registered kernels run the chunks in
  order on the calling thread; the MDF engine passes a thread pool
  (:mod:`ir_bridge.engine.mdf_plan`). Chunks write disjoint output rows, so the result does
  not depend on the runner;
* ``conv_kernel`` can also pool: given the MaxPool that alone reads the conv, it pools each
  chunk while in cache and never stores the full conv output;
* max pooling takes the elementwise maximum of one strided slice per kernel offset, which
  is exact and much faster than reducing a 6-D window view.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..ir.opset import same_pads, window_output
from . import register_kernel

_F32 = np.float32
#: Target size of one im2col chunk, in bytes.
CHUNK_BYTES = 2 << 20


def _f32(a):
    return np.ascontiguousarray(a, dtype=_F32) if a.dtype == np.float64 else a


def _to_last(layout, x):
    """Channels-last view of ``x``."""
    return x if layout == "NHWC" else np.moveaxis(x, 1, -1)


def _from_last(layout, y):
    return y if layout == "NHWC" else np.moveaxis(y, -1, 1)


class _Window:
    """Static facts of a sliding-window op: kernel, strides, dilations, padding mode."""

    def __init__(self, attrs, kernel):
        n = len(kernel)
        self.kernel = tuple(int(k) for k in kernel)
        self.strides = tuple(attrs.get("strides") or (1,) * n)
        self.dilations = tuple(attrs.get("dilations") or (1,) * n)
        self.pads = tuple(attrs.get("pads") or (0,) * (2 * n))
        self.auto_pad = attrs.get("auto_pad", "NOTSET")
        self.ceil_mode = attrs.get("ceil_mode", 0)

    def pads_for(self, spatial):
        """(begin, end) pads per axis for this input size, ceil-mode extension included."""
        n = len(spatial)
        out = []
        for i, size in enumerate(spatial):
            if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
                b, e = same_pads(size, self.kernel[i], self.strides[i], self.dilations[i],
                                 upper=self.auto_pad == "SAME_UPPER")
            elif self.auto_pad == "VALID":
                b, e = 0, 0
            else:
                b, e = self.pads[i], self.pads[n + i]
            if self.ceil_mode:
                length = window_output(size, self.kernel[i], self.strides[i], self.dilations[i],
                                       b, e, "NOTSET", ceil_mode=1)
                need = (length - 1) * self.strides[i] + self.dilations[i] * (self.kernel[i] - 1) + 1
                e = max(e, need - size - b)
            out.append((b, e))
        return out

    def windows(self, x):
        """Strided view ``(N, *out, *kernel, C)`` over a padded channels-last ``x``."""
        n = len(self.kernel)
        spatial = x.shape[1:-1]
        out = [(spatial[i] - self.dilations[i] * (self.kernel[i] - 1) - 1) // self.strides[i] + 1
               for i in range(n)]
        st = x.strides
        return as_strided(
            x,
            (x.shape[0], *out, *self.kernel, x.shape[-1]),
            (st[0], *(st[1 + i] * self.strides[i] for i in range(n)),
             *(st[1 + i] * self.dilations[i] for i in range(n)), st[-1]),
            writeable=False,
        )


def _pad_last(x, pads, value=0.0):
    if not any(b or e for b, e in pads):
        return x
    return np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=value)


def sequential(work, items):
    """The default runner of chunked kernels: ``work(items)`` on the calling thread."""
    work(items)


def _chunks(n_rows_per_item, bytes_per_row, batch):
    per = max(1, CHUNK_BYTES // max(1, n_rows_per_item * bytes_per_row))
    return range(0, batch, per), per


@register_kernel("Gemm")
def _gemm(node):
    return gemm_kernel(node)


def gemm_kernel(node, epilogue=None):
    """The Gemm kernel without its fused activation; ``epilogue(y)``, if given, runs in place
    on the result. One BLAS call: row blocks would repack the weights for each block."""
    w = _f32(node.params["W"])
    b = _f32(node.params["B"]) if "B" in node.params else None
    axis = node.attrs["flatten"]

    def gemm(x):
        if axis is not None:
            x = x.reshape(math.prod(x.shape[:axis]), -1)
        y = x @ w
        if b is not None:
            y += b
        if epilogue is not None:
            epilogue(y)
        return y

    return gemm


@register_kernel("MatMul")
def _matmul(node):
    return np.matmul


@register_kernel("Conv")
def _conv(node):
    return conv_kernel(node)


def _im2col_target(buf, nb, out_sp, kernel, channels):
    """A writable ``(nb, *out, *kernel, C)`` view of the first ``K*C`` columns of ``buf``."""
    f = buf.itemsize
    row = buf.strides[0]
    rows = math.prod(out_sp)
    out_strides = [math.prod(out_sp[d + 1:]) * row for d in range(len(out_sp))]
    k_strides = [math.prod(kernel[d + 1:]) * channels * f for d in range(len(kernel))]
    return as_strided(buf, (nb, *out_sp, *kernel, channels),
                      (rows * row, *out_strides, *k_strides, f))


def conv_kernel(node, epilogue=None, parallel=None, pool=None):
    """The Conv kernel without its fused activation; ``epilogue(chunk)``, if given, runs in
    place on each ``(rows, M)`` chunk of the channels-last output right after its GEMM;
    ``parallel(work, starts)`` runs the batch chunks (default: in order, here).

    With ``pool``, a MaxPool node reading this conv (one group, channels-last, no pool
    padding), the kernel returns the *pooled* output: each chunk is pooled while in cache
    and the full conv output is never stored. A ReLU epilogue then runs after the pooling,
    on a quarter of the values: ``max(relu(a), relu(b)) == relu(max(a, b))``.
    """
    run = parallel or sequential
    w = _f32(node.params["W"])
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    win = _Window(node.attrs, kernel)
    group = node.attrs["group"]
    layout = node.attrs["layout"]
    bias = _f32(node.params["B"]) if "B" in node.params else None
    k = math.prod(kernel)
    mg = m // group
    depthwise = cg == 1 and group > 1
    if depthwise:
        # (K, C, multiplier): output channel c*mult + j, as ONNX orders grouped outputs.
        wd = np.ascontiguousarray(w.reshape(group, mg, k).transpose(2, 0, 1))
    else:
        # Per group a (K*Cg, Mg) matrix matching the (kernel..., channel) order of a window.
        wm = [np.ascontiguousarray(
            w[g * mg:(g + 1) * mg].reshape(mg, cg, k).transpose(2, 1, 0).reshape(k * cg, mg))
            for g in range(group)]
    if pool is not None:
        pool_win = _Window(pool.attrs, pool.attrs["kernel_shape"])
        if (group != 1 or pool.attrs["layout"] != layout or pool_win.ceil_mode
                or any(pool_win.pads) or pool_win.auto_pad not in ("NOTSET", "VALID")):
            raise ValueError("conv_kernel pools only one-group convs with unpadded pools")
    if group == 1:
        # The bias as one more weight row, multiplied by a column of ones in the im2col buffer.
        extra = 0 if bias is None else 1
        w_aug = wm[0] if bias is None else np.ascontiguousarray(np.vstack([wm[0], bias[None]]))

    def conv(x):
        x = _to_last(layout, x)
        x = _pad_last(x, win.pads_for(x.shape[1:-1]))
        view = win.windows(x)
        n, out_sp = view.shape[0], view.shape[1:1 + len(kernel)]
        rows = math.prod(out_sp)
        if group == 1:
            kc = k * cg
            width = kc + extra
            per = max(1, CHUNK_BYTES // max(1, rows * max(width, m) * 4))
            per = min(per, n)
            if pool is not None:
                pooled_sp = _window_out(pool_win, out_sp)
                y = np.empty((n, *pooled_sp, m), dtype=_F32)
            else:
                y = np.empty((n, rows, m), dtype=_F32)

            def work(starts):
                # One im2col buffer (and pool scratch) per worker, refilled chunk by chunk.
                buf = np.empty((per * rows, width), dtype=_F32)
                if extra:
                    buf[:, kc] = 1.0
                scratch = np.empty((per * rows, m), dtype=_F32) if pool is not None else None
                for s in starts:
                    nb = min(per, n - s)
                    cols = buf[:nb * rows]
                    np.copyto(_im2col_target(cols, nb, out_sp, kernel, cg), view[s:s + nb])
                    if pool is None:
                        out = y[s:s + nb].reshape(nb * rows, m)
                        np.matmul(cols, w_aug, out=out)
                        if epilogue is not None:
                            epilogue(out)
                        continue
                    out = scratch[:nb * rows]
                    np.matmul(cols, w_aug, out=out)
                    if epilogue is not None and epilogue is not _relu_inplace:
                        epilogue(out)
                    dst = y[s:s + nb]
                    _max_taps(out.reshape(nb, *out_sp, m), dst, pool_win, pooled_sp)
                    if epilogue is _relu_inplace:
                        epilogue(dst)

            run(work, list(range(0, n, per)))
            return _from_last(layout, y if pool is not None else y.reshape(n, *out_sp, m))
        y = np.empty((n, rows, m), dtype=_F32)
        starts, per = _chunks(rows, k * x.shape[-1] * 4, n)
        for s in starts:
            v = view[s:s + per]
            nb = v.shape[0]
            if depthwise:
                cols = v.reshape(nb * rows, k, group)
                acc = np.zeros((nb * rows, group, mg), dtype=_F32)
                for j in range(k):
                    acc += cols[:, j, :, None] * wd[j]
                y[s:s + nb] = acc.reshape(nb, rows, m)
            else:
                for g in range(group):
                    cols = v[..., g * cg:(g + 1) * cg].reshape(nb * rows, k * cg)
                    y[s:s + nb, :, g * mg:(g + 1) * mg] = (cols @ wm[g]).reshape(nb, rows, mg)
        if bias is not None:
            y += bias
        if epilogue is not None:
            epilogue(y.reshape(n * rows, m))
        return _from_last(layout, y.reshape(n, *out_sp, m))

    return conv


@register_kernel("ConvTranspose")
def _conv_transpose(node):
    w = _f32(node.params["W"])
    c, mg = w.shape[:2]
    kernel = w.shape[2:]
    n_sp = len(kernel)
    a = node.attrs
    group, layout = a["group"], a["layout"]
    strides = tuple(a["strides"] or (1,) * n_sp)
    dil = tuple(a["dilations"] or (1,) * n_sp)
    pads = tuple(a["pads"] or (0,) * (2 * n_sp))
    opad = tuple(a["output_padding"] or (0,) * n_sp)
    cg = c // group
    bias = _f32(node.params["B"]) if "B" in node.params else None
    # Per group a (Cg, K*Mg) matrix: each input pixel spreads over a kernel-sized patch.
    wm = [np.ascontiguousarray(
        w[g * cg:(g + 1) * cg].reshape(cg, mg, -1).transpose(0, 2, 1).reshape(cg, -1))
        for g in range(group)]
    offsets = list(itertools.product(*[range(k) for k in kernel]))

    def conv_transpose(x):
        x = _to_last(layout, x)
        n, sp = x.shape[0], x.shape[1:-1]
        full = [strides[i] * (sp[i] - 1) + dil[i] * (kernel[i] - 1) + 1 + opad[i]
                for i in range(n_sp)]
        out = np.zeros((n, *full, mg * group), dtype=_F32)
        for g in range(group):
            cols = x[..., g * cg:(g + 1) * cg].reshape(-1, cg) @ wm[g]
            cols = cols.reshape(n, *sp, len(offsets), mg)
            for j, off in enumerate(offsets):
                idx = tuple(slice(off[i] * dil[i], off[i] * dil[i] + strides[i] * (sp[i] - 1) + 1,
                                  strides[i]) for i in range(n_sp))
                out[(slice(None), *idx, slice(g * mg, (g + 1) * mg))] += cols[..., j, :]
        crop = tuple(slice(pads[i], full[i] - pads[n_sp + i]) for i in range(n_sp))
        y = out[(slice(None), *crop, slice(None))]
        if bias is not None:
            y = y + bias
        return _from_last(layout, y)

    return conv_transpose


def _window_out(win, spatial):
    """Output sizes of an (already padded) sliding window over ``spatial``."""
    return [(spatial[i] - win.dilations[i] * (win.kernel[i] - 1) - 1) // win.strides[i] + 1
            for i in range(len(spatial))]


def _max_taps(x, y, win, out_sp):
    """``y = max over kernel offsets of x`` for channels-last ``x``: one strided slice of
    ``x`` per offset (the elements at that offset of every window)."""
    first = True
    for off in itertools.product(*[range(kk) for kk in win.kernel]):
        tap = x[(slice(None), *(slice(off[i] * win.dilations[i],
                                      off[i] * win.dilations[i]
                                      + win.strides[i] * (out_sp[i] - 1) + 1,
                                      win.strides[i]) for i in range(len(out_sp))),
                 slice(None))]
        if first:
            np.copyto(y, tap)
            first = False
        else:
            np.maximum(y, tap, out=y)


@register_kernel("MaxPool")
def _max_pool(node):
    return max_pool_kernel(node)


def max_pool_kernel(node, parallel=None):
    """The MaxPool kernel; ``parallel(work, starts)`` may split the batch among threads."""
    win = _Window(node.attrs, node.attrs["kernel_shape"])
    layout = node.attrs["layout"]
    run = parallel or sequential

    def max_pool(x):
        x = _to_last(layout, x)
        x = _pad_last(x, win.pads_for(x.shape[1:-1]), -np.inf)
        out_sp = _window_out(win, x.shape[1:-1])
        y = np.empty((x.shape[0], *out_sp, x.shape[-1]), dtype=x.dtype)
        per = max(1, CHUNK_BYTES // max(1, x[0].nbytes))

        def work(starts):
            for s in starts:
                _max_taps(x[s:s + per], y[s:s + per], win, out_sp)

        run(work, list(range(0, x.shape[0], per)))
        return _from_last(layout, y)

    return max_pool


@register_kernel("AveragePool")
def _avg_pool(node):
    win = _Window(node.attrs, node.attrs["kernel_shape"])
    layout = node.attrs["layout"]
    include = node.attrs["count_include_pad"]
    axes = tuple(range(1 + len(win.kernel), 1 + 2 * len(win.kernel)))
    counts_cache: dict = {}

    def counts(spatial, pads):
        key = (spatial, tuple(pads))
        if key not in counts_cache:
            ones = np.ones((1, *spatial, 1), dtype=_F32)
            if include:
                # Explicit pads count, the ceil-mode extension does not.
                base = win.pads_for(spatial) if not win.ceil_mode else [
                    (win.pads[i], win.pads[len(spatial) + i]) for i in range(len(spatial))]
                ones = _pad_last(ones, base, 1.0)
                extra = [(p[0] - b[0], p[1] - b[1]) for p, b in zip(pads, base)]
                ones = _pad_last(ones, extra, 0.0)
            else:
                ones = _pad_last(ones, pads, 0.0)
            counts_cache[key] = win.windows(ones).sum(axis=axes)
        return counts_cache[key]

    def avg_pool(x):
        x = _to_last(layout, x)
        spatial = x.shape[1:-1]
        pads = win.pads_for(spatial)
        s = win.windows(_pad_last(x, pads)).sum(axis=axes)
        return _from_last(layout, (s / counts(spatial, pads)).astype(x.dtype, copy=False))

    return avg_pool


@register_kernel("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(node):
    reduce = np.mean if node.op == "GlobalAveragePool" else np.max
    layout = node.attrs["layout"]

    def global_pool(x):
        axes = tuple(range(1, x.ndim - 1)) if layout == "NHWC" else tuple(range(2, x.ndim))
        return reduce(x, axis=axes, keepdims=True)

    return global_pool


def _channel_shape(axis, rank):
    shape = [1] * rank
    shape[axis] = -1
    return shape


@register_kernel("BatchNormalization")
def _batchnorm(node):
    p = node.params
    eps = node.attrs["epsilon"]
    inv = (p["scale"].astype(_F32) / np.sqrt(p["var"].astype(_F32) + _F32(eps))).astype(_F32)
    shift = (p["B"].astype(_F32) - p["mean"].astype(_F32) * inv).astype(_F32)
    axis = node.attrs["axis"]

    def batchnorm(x):
        shape = _channel_shape(axis % x.ndim, x.ndim)
        return x * inv.reshape(shape) + shift.reshape(shape)

    return batchnorm


@register_kernel("LayerNormalization")
def _layernorm(node):
    eps = _F32(node.attrs["epsilon"])
    axis = node.attrs["axis"]
    scale = node.params.get("scale")
    bias = node.params.get("B")

    def layernorm(x):
        axes = tuple(range(axis % x.ndim, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        y = centered / np.sqrt(var + eps)
        if scale is not None:
            y = y * scale.astype(_F32)
        if bias is not None:
            y = y + bias.astype(_F32)
        return y

    return layernorm


@register_kernel("Gather")
def _gather(node):
    data = node.params["data"]
    axis = node.attrs["axis"]

    def gather(idx):
        idx = np.asarray(idx).astype(np.int64)
        size = data.shape[axis]
        if idx.size and (idx.min() < -size or idx.max() >= size):
            raise IndexError(f"index out of range [{-size}, {size}) in Gather")
        return np.take(data, idx, axis=axis)

    return gather


@register_kernel("ReduceMean", "ReduceMax")
def _reduce(node):
    fn = np.mean if node.op == "ReduceMean" else np.max
    axes, keep = tuple(node.attrs["axes"]), bool(node.attrs["keepdims"])
    return lambda x: fn(x, axis=axes, keepdims=keep)


def _relu_inplace(y):
    np.maximum(y, 0, out=y)


def _softmax_last_inplace(y):
    y -= y.max(axis=-1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)


def fused_kernel(node, parallel=None, pool=None):
    """A faster kernel for a Gemm, Conv (one group) or MaxPool node, fused activation
    included, or None when :func:`ir_bridge.ops.kernel_for` is the kernel to use.

    A ReLU with default attributes (and Softmax over the last axis of a 2-D Gemm) runs in
    place on each fresh chunk of output; other fused activations run after, as
    ``kernel_for`` does. ``parallel(work, items)`` may spread Conv/MaxPool chunks over
    threads (a Gemm is one BLAS call).
    ``pool``: a MaxPool node that alone reads this Conv; the kernel then computes the pool
    of the conv (see :func:`conv_kernel`). Same arithmetic as ``kernel_for``."""
    from . import activation_kernel

    if node.op == "MaxPool":
        return max_pool_kernel(node, parallel)
    if node.op not in ("Gemm", "Conv") or (node.op == "Conv" and node.attrs["group"] != 1):
        return None
    act = node.attrs.get("activation")
    attrs = node.attrs.get("activation_attrs") or {}
    epilogue = after = None
    if act == "Relu" and not attrs.get("negative_slope") and attrs.get("max_value") is None \
            and not attrs.get("threshold"):
        epilogue = _relu_inplace
    elif act == "Softmax" and node.op == "Gemm" and attrs.get("axis", -1) in (-1, 1) \
            and node.type is not None and node.type.rank == 2:
        epilogue = _softmax_last_inplace
    elif act:
        after = activation_kernel(act, attrs)
    if pool is not None:
        if node.op != "Conv" or after is not None or not can_pool(node, pool):
            return None
        return conv_kernel(node, epilogue, parallel, pool)
    fn = gemm_kernel(node, epilogue) if node.op == "Gemm" else \
        conv_kernel(node, epilogue, parallel)
    if after is None:
        return fn
    return lambda x: after(fn(x))


def can_pool(conv, pool) -> bool:
    """Whether :func:`conv_kernel` can compute ``pool(conv(x))`` in one pass."""
    a = pool.attrs
    return (pool.op == "MaxPool" and conv.op == "Conv" and conv.attrs["group"] == 1
            and a["layout"] == conv.attrs["layout"] and not a["ceil_mode"]
            and not any(a["pads"] or ()) and a["auto_pad"] in ("NOTSET", "VALID"))
