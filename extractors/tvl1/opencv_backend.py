"""TV-L1 on the CPU with OpenCV's ``cv2.optflow.DualTVL1OpticalFlow`` (the reference backend).

The number of threads is the caller's business (``cv2.setNumThreads``); nothing here changes it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .params import TVL1Params


def create_opencv_tvl1(params: TVL1Params) -> cv2.optflow.DualTVL1OpticalFlow:
    """A fresh OpenCV TV-L1 object configured to ``params`` (values read back and checked).

    A new object is needed per image size: OpenCV overwrites its ``nscales`` member with the number
    of levels that fitted the last image (``reference/tvl1.md`` pitfall 14).
    """
    inner = params.inner_iterations
    median = params.median_filter if params.median_filter > 1 else 1
    # Keyword names are OpenCV's Python ones; ``innnerIterations`` (three n's) is its real spelling.
    algo = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tau,
        lambda_=params.lambda_,
        theta=params.theta,
        nscales=params.n_scales,
        warps=params.n_warps,
        epsilon=params.epsilon,
        innnerIterations=inner,
        outerIterations=params.outer_iterations,
        scaleStep=params.scale_factor,
        gamma=0.0,
        medianFiltering=median,
        useInitialFlow=False,
    )
    # A shifted positional or renamed keyword would silently run other parameters: read them back.
    got = {
        "tau": algo.getTau(), "lambda_": algo.getLambda(), "theta": algo.getTheta(),
        "n_scales": algo.getScalesNumber(), "n_warps": algo.getWarpingsNumber(),
        "epsilon": algo.getEpsilon(), "inner": algo.getInnerIterations(),
        "outer": algo.getOuterIterations(), "scale_factor": algo.getScaleStep(),
        "gamma": algo.getGamma(), "median": algo.getMedianFiltering(),
    }
    want = {
        "tau": params.tau, "lambda_": params.lambda_, "theta": params.theta,
        "n_scales": params.n_scales, "n_warps": params.n_warps, "epsilon": params.epsilon,
        "inner": inner, "outer": params.outer_iterations, "scale_factor": params.scale_factor,
        "gamma": 0.0, "median": median,
    }
    for key, value in want.items():
        if not np.isclose(got[key], value, rtol=1e-12, atol=0):
            raise RuntimeError(f"OpenCV TV-L1 parameter {key}: set {value}, read back {got[key]}")
    return algo


def opencv_flow(prev: np.ndarray, nxt: np.ndarray, params: TVL1Params) -> np.ndarray:
    """TV-L1 flow of each pair with OpenCV, one pair at a time.

    Args:
        prev: (N, H, W) uint8, or float32 on the 0-255 scale (validated by the caller).
        nxt: (N, H, W), same dtype and shape.
        params: TV-L1 parameters.

    Returns:
        (N, 2, H, W) float32 flow, channel 0 = x, channel 1 = y, with prev(x) ~ next(x + flow).
    """
    n, h, w = prev.shape
    out = np.empty((n, 2, h, w), np.float32)
    algo = create_opencv_tvl1(params)
    for i in range(n):
        if prev.dtype == np.uint8:
            a, b = prev[i], nxt[i]
        else:
            # OpenCV multiplies float input by 255 (it assumes [0, 1]); our float input is 0-255.
            a = np.ascontiguousarray(prev[i], np.float32) / np.float32(255.0)
            b = np.ascontiguousarray(nxt[i], np.float32) / np.float32(255.0)
        flow = algo.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None)
        out[i] = flow.transpose(2, 0, 1)
    return out
