"""Kernels of the data-movement ops: Reshape, Flatten, Transpose, Concat, Pad, Slice, …"""

from __future__ import annotations

import math

import numpy as np

from . import register_kernel


@register_kernel("Reshape")
def _reshape(node):
    shape = [int(d) for d in node.attrs["shape"]]

    def reshape(x):
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])

    return reshape


@register_kernel("Flatten")
def _flatten(node):
    axis = node.attrs["axis"]

    def flatten(x):
        a = axis % x.ndim if x.ndim else 0
        return x.reshape(math.prod(x.shape[:a]), -1)

    return flatten


@register_kernel("Transpose")
def _transpose(node):
    perm = tuple(node.attrs["perm"])
    return lambda x: x.transpose(perm)


@register_kernel("Concat")
def _concat(node):
    axis = node.attrs["axis"]
    return lambda *xs: np.concatenate(xs, axis=axis)


@register_kernel("Pad")
def _pad(node):
    pads = node.attrs["pads"]
    value = node.attrs["value"]
    mode = node.attrs["mode"]

    def pad(x):
        n = x.ndim
        width = [(pads[i], pads[n + i]) for i in range(n)]
        if mode == "constant":
            return np.pad(x, width, constant_values=value)
        return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge"}[mode])

    return pad


@register_kernel("Slice")
def _slice(node):
    a = node.attrs
    steps = a["steps"] or [1] * len(a["axes"])
    spec = list(zip(a["axes"], a["starts"], a["ends"], steps))

    def slice_(x):
        idx = [slice(None)] * x.ndim
        for axis, start, end, step in spec:
            idx[axis % x.ndim] = slice(start, end, step)
        return x[tuple(idx)]

    return slice_


@register_kernel("Squeeze")
def _squeeze(node):
    axes = tuple(node.attrs["axes"])
    return lambda x: np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


@register_kernel("Unsqueeze")
def _unsqueeze(node):
    axes = tuple(node.attrs["axes"])

    def unsqueeze(x):
        rank = x.ndim + len(axes)
        return np.expand_dims(x, tuple(sorted(a % rank for a in axes)))

    return unsqueeze


@register_kernel("Resize")
def _resize(node):
    scales = node.attrs["scales"]
    if any(float(s) != int(s) or s < 1 for s in scales):
        raise ValueError(f"Resize supports integer upscaling only, got scales {scales}")

    def resize(x):
        for axis, s in enumerate(int(s) for s in scales):
            if s != 1:
                x = np.repeat(x, s, axis=axis)
        return x

    return resize


@register_kernel("GetItem")
def _getitem(node):
    index = node.attrs["index"]
    return lambda t: t[index]


@register_kernel("Constant", "Input")
def _source(node):
    value = node.params.get("value")
    return lambda: value
