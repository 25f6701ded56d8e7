"""TV-L1 parameters shared by the OpenCV and the PyTorch backend.

Field names are the config keys of the TV-L1 part of the ``flow:`` section (the flow stage builds
this dataclass with ``build_dataclass(TVL1Params, cfg["flow"]["tvl1"], "flow.tvl1")`` or from flat
keys; the names below are the contract): ``tau, lambda_, theta, n_scales, scale_factor, n_warps,
epsilon, max_iterations, outer_iterations, median_filter``. ``lambda_`` is spelt like OpenCV's Python
keyword (``lambda`` is a Python keyword).

The defaults are the EPIC-KITCHENS extractor's (``furnari-flow``, OpenCV 2.4 GPU class) values as
far as the OpenCV CPU algorithm can follow them (``reference/tvl1.md`` section 2.5): 0.5 pyramid
step, 5 levels, 5 warps, 300 iterations per warp with early exit at epsilon 0.01, no median filter.
OpenCV's own CPU defaults are :data:`OPENCV_CPU_DEFAULTS` (0.8 step, median 5, 30 x 10 iterations).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TVL1Params:
    """Dual TV-L1 parameters (Zach et al. 2007 as implemented by OpenCV ``DualTVL1OpticalFlow``).

    Attributes:
        tau: time step of the dual (Chambolle) update; OpenCV ``tau``.
        lambda_: weight of the data term (images on the 0-255 scale); OpenCV ``lambda_``.
        theta: coupling between u and v; OpenCV ``theta``.
        n_scales: maximum number of pyramid levels (fewer when a level side would drop below 16 px);
            OpenCV ``nscales``.
        scale_factor: ratio between consecutive pyramid levels, in (0, 1); OpenCV ``scaleStep``.
            0.5 = the EPIC setting (2x2 mean down-sampling), 0.8 = OpenCV's CPU default.
        n_warps: warps (re-linearisations) per level; OpenCV ``warps``.
        epsilon: stopping threshold: a warp ends once the mean squared flow update per pixel is
            <= epsilon**2 (checked after every iteration); 0 disables early exit. OpenCV ``epsilon``.
        max_iterations: maximum primal-dual iterations per warp (OpenCV's inner x outer product).
        outer_iterations: number of outer iterations per warp; each starts with the median filter
            (only meaningful with ``median_filter`` > 1); must divide ``max_iterations``.
        median_filter: median kernel size applied to the flow at the start of every outer iteration;
            0 or 1 = off (EPIC), 3 or 5 = on (OpenCV CPU default 5). OpenCV ``medianFiltering``.
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    n_scales: int = 5
    scale_factor: float = 0.5
    n_warps: int = 5
    epsilon: float = 0.01
    max_iterations: int = 300
    outer_iterations: int = 1
    median_filter: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"TVL1Params.{name}={getattr(self, name)!r}: {why}")

        for name in ("tau", "lambda_", "theta"):
            if not float(getattr(self, name)) > 0:
                raise bad(name, "must be > 0")
        if not 0.0 < float(self.scale_factor) < 1.0:
            raise bad("scale_factor", "must be in (0, 1)")
        if not float(self.epsilon) >= 0.0:
            raise bad("epsilon", "must be >= 0")
        for name in ("n_scales", "n_warps", "max_iterations", "outer_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "must be an integer >= 1")
        if self.median_filter not in (0, 1, 3, 5):
            raise bad("median_filter", "must be 0 or 1 (off), 3 or 5 (OpenCV supports only 3 and 5 on float data)")
        if self.max_iterations % self.outer_iterations:
            raise bad("outer_iterations", f"must divide max_iterations={self.max_iterations}")

    @property
    def inner_iterations(self) -> int:
        """Iterations per outer iteration (OpenCV ``innerIterations``)."""
        return self.max_iterations // self.outer_iterations

    def replace(self, **changes: object) -> TVL1Params:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


#: The EPIC-KITCHENS extractor's parameters (the dataclass defaults).
EPIC_PARAMS = TVL1Params()

#: OpenCV's CPU ``DualTVL1OpticalFlow_create()`` defaults (used as a second parity setting).
OPENCV_CPU_DEFAULTS = TVL1Params(scale_factor=0.8, outer_iterations=10, median_filter=5)
