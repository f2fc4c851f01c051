"""fold-batchnorm: fold an inference BatchNormalization into the Conv/Gemm before it.

With ``a = scale / sqrt(var + epsilon)`` per channel, ``BN(conv(x))`` equals a conv with

    W' = W * a          (per output channel: axis 0 of Conv W, axis 1 of Gemm W)
    B' = (B - mean) * a + beta      (B = 0 when the host has no bias)

Preconditions, checked in code: the host is a Conv or Gemm without a fused activation
(the activation would sit between them), it has no other user and is not a graph output,
and the BN normalises the host's channel axis (Conv: from its layout; Gemm: the last).
"""

from __future__ import annotations

import numpy as np

from ..ir.types import channel_axis
from .base import register_pass


def _host_channel_axis(host, rank):
    if host.op == "Gemm":
        return rank - 1
    return channel_axis(host.attrs["layout"], rank)


@register_pass("fold-batchnorm", "Fold BatchNormalization into the preceding Conv or Gemm "
               "weights.", after=("eliminate-dropout",))
def fold_batchnorm(graph, ctx) -> bool:
    changed = False
    for bn in list(graph):
        if bn.op != "BatchNormalization":
            continue
        host = graph.node(bn.inputs[0])
        if host.op not in ("Conv", "Gemm"):
            ctx.explain(bn, f"its input {host.name} is a {host.op}, not a Conv or Gemm")
            continue
        if host.attrs.get("activation"):
            ctx.explain(bn, f"{host.name} has a fused activation")
            continue
        if not graph.has_one_use(host):
            ctx.explain(bn, f"{host.name} has other users")
            continue
        rank = bn.type.rank
        if bn.attrs["axis"] % rank != _host_channel_axis(host, rank):
            ctx.explain(bn, "it normalises an axis other than the channels")
            continue
        p = bn.params
        a = (p["scale"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64)
                                                     + bn.attrs["epsilon"]))
        w = host.params["W"].astype(np.float64)
        if host.op == "Conv":
            w = w * a.reshape(-1, *([1] * (w.ndim - 1)))
        else:
            w = w * a
        b = host.params.get("B")
        b = np.zeros(a.shape) if b is None else b.astype(np.float64)
        host.params["W"] = w.astype(np.float32)
        host.params["B"] = ((b - p["mean"]) * a + p["B"]).astype(np.float32)
        graph.replace_all_uses_with(bn, host)
        graph.remove_node(bn)
        changed = True
    return changed
