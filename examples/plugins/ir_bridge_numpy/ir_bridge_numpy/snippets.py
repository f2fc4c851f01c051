"""Source of the helper functions a generated module may contain.

Each entry is plain numpy code that :mod:`ir_bridge_numpy.codegen` copies into a generated
module when one of its nodes needs it, so a small model carries only the helpers it uses.
They are written for readability first: a reader of the generated file should be able to
check them against the op definitions in the ir_bridge op reference.
"""

#: Helper name -> its source (a top-level ``def``).
HELPERS = {
    "_pad": '''
def _pad(x, pads, value):
    """Pad the spatial axes of a channels-last x by ((begin, end), ...) with value."""
    return np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=value)
''',
    "_windows": '''
def _windows(x, kernel, strides, dilations):
    """Sliding windows over a channels-last x: a read-only view (N, *out, C, *kernel)."""
    n = len(kernel)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilations))
    view = sliding_window_view(x, span, axis=tuple(range(1, n + 1)))
    step = tuple(slice(None, None, s) for s in strides)
    dilate = tuple(slice(None, None, d) for d in dilations)
    return view[(slice(None), *step, slice(None), *dilate)]
''',
    "_conv": '''
def _conv(x, w, b, kernel, strides, dilations):
    """Convolution of a padded channels-last x; w is (group, C/group * K, M/group)."""
    view = _windows(x, kernel, strides, dilations)
    out = view.shape[:-len(kernel) - 1]
    group, cols_per_group, _ = w.shape
    cg = cols_per_group // math.prod(kernel)
    parts = []
    for g in range(group):
        part = view[(Ellipsis, slice(g * cg, (g + 1) * cg)) + (slice(None),) * len(kernel)]
        # The reshape copies the windows into the im2col matrix; one matmul does the rest.
        parts.append(part.reshape(-1, cols_per_group) @ w[g])
    y = parts[0] if group == 1 else np.concatenate(parts, axis=-1)
    y = y.reshape(*out, -1)
    if b is not None:
        y += b
    return y
''',
    "_sigmoid": '''
def _sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
''',
    "_softmax": '''
def _softmax(x, axis):
    """Softmax along axis, shifted by the max so exp never overflows."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
''',
    "_log_softmax": '''
def _log_softmax(x, axis):
    """Log of softmax along axis, computed stably."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
''',
    "_relu": '''
def _relu(x, negative_slope, max_value, threshold):
    """Keras relu: the part above threshold (capped at max_value), minus the slope part."""
    pos = np.where(x > threshold, x, 0) if threshold else np.maximum(x, 0)
    if max_value is not None:
        pos = np.clip(pos, 0, max_value)
    if negative_slope:
        pos = pos - np.float32(negative_slope) * np.maximum(np.float32(threshold) - x, 0)
    return pos.astype(x.dtype, copy=False)
''',
    "_check_input": '''
def _check_input(x, shape, dtype, name):
    """x as an array of dtype, after checking its rank and fixed dimensions."""
    x = np.asarray(x)
    if x.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, x.shape)):
        want = tuple("?" if d is None else d for d in shape)
        raise ValueError(f"input {name!r}: shape {x.shape} does not match {want}")
    return x.astype(dtype, copy=False)
''',
}

# Helpers that call other helpers, so both get emitted.
HELPER_NEEDS = {"_conv": ("_windows",)}
