"""Named pipelines: ordered lists of pass names.

``default`` is what every conversion runs; ``none`` runs nothing.  A backend's layout
preparation (``layout-nchw`` / ``layout-nhwc``) is added by ``api.emit`` whatever pipeline the
user picked, because the backend cannot emit the graph without it.
"""

from __future__ import annotations

PIPELINES: dict[str, list[str]] = {
    "none": [],
    "default": [
        "eliminate-dropout",
        "constant-folding",
        "fold-pad",
        "fold-batchnorm",
        "fold-flatten",
        "fuse-activation",
        "dead-code",
    ],
}

#: Passes each layout needs, run just before a backend emits.
LAYOUT_PASSES = {"NCHW": "layout-nchw", "NHWC": "layout-nhwc"}
