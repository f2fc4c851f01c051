"""fold-pad: fold a zero ``Pad`` of the spatial axes into the ``Conv`` that reads it.

``Conv(Pad(x, p), pads=q)`` equals ``Conv(x, pads=q + p)`` when the Pad is constant-zero and
pads only the spatial axes of the Conv's layout (Keras ``ZeroPadding2D`` before a valid
convolution, as in ResNet's stem).  Preconditions: mode ``constant``, value 0, no padding of
the batch or channel axes, no ``auto_pad`` on the Conv, and every user of the Pad is such a
Conv (otherwise the padded value is still needed and nothing is gained).
"""

from __future__ import annotations

from .base import register_pass


def _spatial_pads(pad, layout):
    """The Pad's (begins, ends) over the spatial axes, or None if it pads anything else."""
    pads = list(pad.attrs["pads"])
    rank = len(pads) // 2
    begins, ends = pads[:rank], pads[rank:]
    spatial = range(1, rank - 1) if layout == "NHWC" else range(2, rank)
    other = [a for a in range(rank) if a not in spatial]
    if any(begins[a] or ends[a] for a in other) or min(pads) < 0:
        return None
    return [begins[a] for a in spatial], [ends[a] for a in spatial]


@register_pass("fold-pad", "Fold a zero spatial Pad into the following Conv's pads.",
               after=("eliminate-dropout",))
def fold_pad(graph, ctx) -> bool:
    changed = False
    for pad in list(graph):
        if pad.op != "Pad":
            continue
        users = graph.users(pad)
        if pad.attrs["mode"] != "constant" or pad.attrs["value"] != 0:
            ctx.explain(pad, "it is not a zero padding")
            continue
        if not users or graph.is_output(pad) or any(
                u.op != "Conv" or u.attrs["auto_pad"] != "NOTSET" for u in users):
            ctx.explain(pad, "not every user is a Conv with explicit pads")
            continue
        extra = [_spatial_pads(pad, u.attrs["layout"]) for u in users]
        if any(e is None for e in extra):
            ctx.explain(pad, "it pads the batch or channel axis")
            continue
        for conv, (begins, ends) in zip(users, extra):
            n = len(begins)
            old = list(conv.attrs["pads"] or [0] * (2 * n))
            conv.attrs["pads"] = tuple([old[i] + begins[i] for i in range(n)]
                                       + [old[n + i] + ends[i] for i in range(n)])
        graph.bypass(pad)
        changed = True
    return changed
