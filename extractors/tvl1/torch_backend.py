"""Batched dual TV-L1 optical flow in PyTorch (CPU and CUDA), a port of OpenCV's CPU algorithm.

It follows ``cv2.optflow.DualTVL1OpticalFlow`` step by step (``reference/tvl1.md`` section 1):

- pyramid: level sizes ``round_half_even(side * scale_factor)``, stop below 16 px; at 0.5 a 2x2 mean
  (OpenCV's fast area path, edge pixels replicated for odd sides), otherwise half-pixel bilinear
  sampling with the step ``1 / scale_factor``; no pre-smoothing;
- per level: centred gradient of the *unwarped* second image (halved one-sided at the borders),
  dual variables reset to 0, flow carried over;
- per warp: bicubic (Keys a = -0.75) sampling of I1, I1x, I1y at x + u with each tap outside the
  image read as 0 (``grid_sample(bicubic, zeros, align_corners=True)``, = OpenCV 5 ``remap``);
  residual and squared gradient norm frozen for the warp;
- per iteration, in OpenCV's order: thresholding at the current u, divergence of the previous p,
  primal update, forward gradient of the new u, Chambolle dual update;
- stopping: per pair, after every iteration, sum of squared updates <= epsilon^2 * H_level * W_level
  (near the threshold the CPU path recomputes OpenCV's serial float32 sum, so both stop alike);
- median filter (only when ``median_filter`` > 1) at the start of every outer iteration.

Parity with cv2 5.0 and speed: ``docs/flow_parity.md``, ``docs/benchmarks_flow.md``.

Batching: every tensor carries a leading pair axis B. A pair that has met the stopping rule is
*frozen* (its step sizes become 0, so its u and p stop changing) without a host sync; every
``check_every`` iterations the host looks at the flags, ends the warp when all pairs are frozen, and
drops frozen pairs from the working batch so that the remaining ones run alone. Results therefore
do not depend on the batch a pair is in.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .params import TVL1Params

FLT_EPSILON = 1.1920928955078125e-07
MIN_LEVEL_SIDE = 16


def pyramid_sizes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """Level sizes (H, W), finest first, as OpenCV builds them.

    A level whose side would be < 16 px ends the pyramid (and is not used); sides are rounded half
    to even (OpenCV ``cvRound`` on x86), e.g. 57 * 0.5 -> 28.
    """
    sizes = [(height, width)]
    while len(sizes) < params.n_scales:
        h, w = sizes[-1]
        nh, nw = round(h * params.scale_factor), round(w * params.scale_factor)
        if nh < MIN_LEVEL_SIDE or nw < MIN_LEVEL_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


def _linear_taps(src: int, dst: int, scale: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Indices and weights of OpenCV's INTER_LINEAR ``resize`` along one axis.

    Source coordinate ``(d + 0.5) * scale - 0.5`` with ``scale`` = source step per destination
    pixel; clamped at the borders (weight 0 on the missing neighbour), as in ``resize.cpp``.

    Returns:
        i0, i1: (dst,) int64 source indices; w0, w1: (dst,) float32 weights.
    """
    d = torch.arange(dst, dtype=torch.float64)
    f = ((d + 0.5) * scale - 0.5).float().double()  # OpenCV rounds the coordinate to float
    i0 = torch.floor(f)
    frac = f - i0
    low = i0 < 0
    frac[low] = 0.0
    i0[low] = 0
    high = i0 >= src - 1
    frac[high] = 0.0
    i0[high] = src - 1
    i0 = i0.long()
    i1 = torch.clamp(i0 + 1, max=src - 1)
    w1 = frac.float()
    w0 = (1.0 - frac).float()
    return i0.to(device), i1.to(device), w0.to(device), w1.to(device)


def resize_linear(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None) -> torch.Tensor:
    """OpenCV ``resize(INTER_LINEAR)`` of float data, half-pixel centres, horizontal pass first.

    Args:
        x: (..., H, W) float32.
        size: output (H', W').
        scale: source pixels per output pixel (sy, sx); default the size ratio (H/H', W/W'), which
            is what OpenCV uses when given a destination size; the pyramid passes 1 / scale_factor.

    Returns:
        (..., H', W') float32.
    """
    h, w = x.shape[-2:]
    oh, ow = size
    sy, sx = scale if scale is not None else (h / oh, w / ow)
    xi0, xi1, xw0, xw1 = _linear_taps(w, ow, sx, x.device)
    yi0, yi1, yw0, yw1 = _linear_taps(h, oh, sy, x.device)
    rows = x.index_select(-1, xi0) * xw0 + x.index_select(-1, xi1) * xw1
    return rows.index_select(-2, yi0) * yw0[:, None] + rows.index_select(-2, yi1) * yw1[:, None]


def downsample(x: torch.Tensor, size: tuple[int, int], scale_factor: float) -> torch.Tensor:
    """One pyramid step of (B, H, W) images to ``size`` as OpenCV ``resize(fx=fy=scale_factor)``.

    At exactly 0.5 OpenCV switches to its 2x2 area mean; a block cut by an odd border averages the
    pixels that exist, which equals replicating the edge.
    """
    if scale_factor == 0.5:
        oh, ow = size
        h, w = x.shape[-2:]
        x = x[..., : 2 * oh, : 2 * ow]
        pad_h, pad_w = 2 * oh - x.shape[-2], 2 * ow - x.shape[-1]
        if pad_h or pad_w:
            x = F.pad(x.unsqueeze(1), (0, pad_w, 0, pad_h), mode="replicate").squeeze(1)
        return F.avg_pool2d(x.unsqueeze(1), 2).squeeze(1)
    return resize_linear(x, size, (1.0 / scale_factor, 1.0 / scale_factor))


def centred_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV's centred image gradient of (B, H, W): half differences, halved one-sided at borders."""
    padded = F.pad(img.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    gx = 0.5 * (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2])
    gy = 0.5 * (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1])
    return gx, gy


def median_blur(u: torch.Tensor, kernel: int) -> torch.Tensor:
    """Median filter of each (H, W) plane of (B, C, H, W), replicated border (= OpenCV ``medianBlur``).

    Forgetful selection on the k*k shifted views with element-wise min/max (no k*k copy, no sort):
    keep k*k//2 + 2 candidates, drop their minimum and maximum (neither can be the median), add
    the next view, repeat; the last one left is the median. Exact (selection, no arithmetic).
    """
    b, c, h, w = u.shape
    r = kernel // 2
    padded = F.pad(u.reshape(b * c, 1, h, w), (r, r, r, r), mode="replicate")[:, 0]
    # Contiguous copies, updated in place: a fresh large tensor per min/max costs page faults.
    views = [padded[:, dy : dy + h, dx : dx + w].contiguous() for dy in range(kernel) for dx in range(kernel)]
    scratch = torch.empty_like(views[0])
    n_keep = len(views) // 2 + 2
    cur, rest = views[:n_keep], views[n_keep:]

    def exchange(i: int, j: int) -> None:  # cur[i], cur[j] = min, max
        nonlocal scratch
        torch.minimum(cur[i], cur[j], out=scratch)
        torch.maximum(cur[i], cur[j], out=cur[j])
        cur[i], scratch = scratch, cur[i]

    while True:
        for i in range(1, len(cur)):  # minimum to the front
            exchange(0, i)
        for i in range(1, len(cur) - 1):  # maximum of the rest to the back
            exchange(i, len(cur) - 1)
        cur = cur[1:-1]
        if not rest:
            break
        cur.append(rest.pop(0))
    return cur[0].reshape(b, c, h, w)


class _Warp:
    """Per-warp constants of the working batch: g = (I1wx, I1wy), rho_c and 1/G.

    Shapes: g (B, 2, H, W); rho_c, neg_inv_g (B, 1, H, W).
    """

    def __init__(self, g: torch.Tensor, rho_c: torch.Tensor, neg_inv_g: torch.Tensor) -> None:
        self.g, self.rho_c, self.neg_inv_g = g, rho_c, neg_inv_g

    def select(self, idx: torch.Tensor) -> _Warp:
        return _Warp(self.g[idx], self.rho_c[idx], self.neg_inv_g[idx])


def _prepare_warp(
    i0: torch.Tensor, i1_stack: torch.Tensor, base_grid: torch.Tensor, u: torch.Tensor
) -> _Warp:
    """Warp I1 and its gradient by the current flow and freeze the linearised data term.

    Args:
        i0: (B, 1, H, W) first image of the level.
        i1_stack: (B, 3, H, W) float64 second image and its centred gradient (x, y).
        base_grid: (H, W, 2) pixel coordinates (x, y).
        u: (B, 2, H, W) current flow in pixels of the level.
    """
    h, w = i0.shape[-2:]
    coords = base_grid + u.permute(0, 2, 3, 1)  # X = x + u1, Y = y + u2, float32 as in OpenCV
    # grid_sample takes normalised coordinates and maps them back to pixels; in float32 that round
    # trip moves a sample by up to ~3e-5 px (0.01 grey levels on sharp texture), so the sampling
    # runs in float64 (25 calls per pair, a small share of the time).
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=torch.float64, device=u.device)
    grid = coords.double() * scale - 1.0  # align_corners=True: -1 is pixel 0, +1 is pixel W-1
    warped = F.grid_sample(i1_stack, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
    warped = warped.to(u.dtype)
    i1w, g = warped[:, :1], warped[:, 1:].contiguous()
    big_g = (g * g).sum(1, keepdim=True)
    rho_c = i1w - g[:, :1] * u[:, :1] - g[:, 1:] * u[:, 1:] - i0  # OpenCV's evaluation order
    # OpenCV divides by G only where G > FLT_EPSILON; elsewhere the step is at most lambda*theta*|g|
    # with |g| < 3.5e-4, so clamping -rho/G with 1/G := 0 there changes nothing measurable.
    neg_inv_g = torch.where(big_g > FLT_EPSILON, -1.0 / big_g, torch.zeros_like(big_g))
    return _Warp(g, rho_c, neg_inv_g)


class _State:
    """Primal/dual state and scratch buffers of the working batch of one level.

    Shapes: u, div, v, du (B, 2, H, W); p, grad (B, 2 components, 2 directions, H, W);
    ng (B, 2, H, W); rho (B, 1, H, W).
    """

    def __init__(self, u: torch.Tensor, p: torch.Tensor, scratch: bool = True) -> None:
        self.u, self.p = u, p
        if not scratch:  # the compiled iteration allocates its own
            return
        self.grad = torch.zeros_like(p)  # last column / row stay 0 (forward differences)
        self.div = torch.empty_like(u)
        self.v = torch.empty_like(u)
        self.du = torch.empty_like(u)
        self.ng = torch.empty_like(u)
        self.sq = torch.empty_like(p)
        self.rho = torch.empty_like(u[:, :1])


def _iterate(
    st: _State,
    wp: _Warp,
    l_t: float,
    theta: float,
    taut: float,
    scale: torch.Tensor | None,
) -> torch.Tensor:
    """One primal-dual iteration in OpenCV's order, in place on ``st``.

    Args:
        l_t, theta, taut: lambda*theta, theta and tau/theta (float32 values).
        scale: None when every pair of the working batch is active (the fast path), else (B, 1, 1, 1)
            1 for active and 0 for frozen pairs; 0 makes the iteration a no-op for that pair.

    Returns:
        (B,) sum of squared flow updates per pair.
    """
    u, p, g = st.u, st.p, wp.g
    b = u.shape[0]
    # 1. thresholding at the current u: v = u + d * g, d = clip(-rho / G, -l_t, l_t)
    rho = torch.addcmul(wp.rho_c, g[:, :1], u[:, :1], out=st.rho)
    rho.addcmul_(g[:, 1:], u[:, 1:])
    d = rho.mul_(wp.neg_inv_g).clamp_(min=-l_t, max=l_t)
    if scale is not None:
        d.mul_(scale)
    # 2. divergence of the previous p (backward differences, terms outside the image = 0)
    div = torch.add(p[:, :, 0], p[:, :, 1], out=st.div)
    div[..., 1:].sub_(p[:, :, 0, :, :-1])
    div[..., 1:, :].sub_(p[:, :, 1, :-1, :])
    # 3. primal update u_new = v + theta * div(p), rounded in OpenCV's order (v first), and the
    #    squared update (u_new - u)^2 summed for the stopping rule
    v = torch.addcmul(u, g, d, out=st.v)
    if scale is None:
        v.add_(div, alpha=theta)
    else:
        v.addcmul_(div, scale * theta)
    du = torch.sub(v, u, out=st.du)
    flat = du.view(b, -1)
    err = torch.linalg.vecdot(flat, flat)
    u.copy_(v)
    # 4. forward gradient of the new u (0 on the last column / row)
    grad = st.grad
    torch.sub(u[..., 1:], u[..., :-1], out=grad[:, :, 0, :, :-1])
    torch.sub(u[..., 1:, :], u[..., :-1, :], out=grad[:, :, 1, :-1, :])
    # 5. dual update p = (p + taut * grad u) / (1 + taut * |grad u|)
    sq = torch.mul(grad, grad, out=st.sq)
    ng = torch.add(sq[:, :, 0], sq[:, :, 1], out=st.ng).sqrt_()
    if scale is None:
        ng.mul_(taut)
        p.add_(grad, alpha=taut)
    else:
        taut_b = scale * taut
        ng.mul_(taut_b)
        p.addcmul_(grad, taut_b.unsqueeze(-1))
    p.div_(ng.add_(1.0).unsqueeze(2))
    return err


def _iterate_pure(
    u: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor,
    rho_c: torch.Tensor,
    neg_inv_g: torch.Tensor,
    scale: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The iteration of :func:`_iterate` without mutation, for ``torch.compile`` to fuse.

    Same arithmetic; u (B, 2, H, W), p (B, 2, 2, H, W), scale (B, 1, 1, 1) as in ``_iterate``.

    Returns:
        new u, new p, (B,) sum of squared updates.
    """
    rho = rho_c + g[:, :1] * u[:, :1] + g[:, 1:] * u[:, 1:]
    d = (rho * neg_inv_g).clamp(-l_t, l_t) * scale
    div = (
        p[:, :, 0] + p[:, :, 1]
        - F.pad(p[:, :, 0, :, :-1], (1, 0))
        - F.pad(p[:, :, 1, :-1, :], (0, 0, 1, 0))
    )
    u_new = (u + g * d) + (theta * scale) * div
    du = u_new - u
    err = (du * du).sum(dim=(1, 2, 3))
    ux = F.pad(u_new[..., 1:] - u_new[..., :-1], (0, 1))
    uy = F.pad(u_new[..., 1:, :] - u_new[..., :-1, :], (0, 0, 0, 1))
    taut_b = taut * scale
    denom = 1.0 + taut_b * torch.sqrt(ux * ux + uy * uy)
    p_new = (p + taut_b.unsqueeze(-1) * torch.stack([ux, uy], dim=2)) / denom.unsqueeze(2)
    return u_new, p_new, err


_COMPILED: dict[str, object] = {}


def _compiled_iterate():
    """``torch.compile``d :func:`_iterate_pure` (built on first use; dynamic shapes for all levels)."""
    if "fn" not in _COMPILED:
        import torch._dynamo.config as dynamo_config

        # Levels and compacted batches give a handful of shape families (size-1 dims specialise);
        # more than the default 8 would silently fall back to eager.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        _COMPILED["fn"] = torch.compile(_iterate_pure, dynamic=True)
    return _COMPILED["fn"]


def _serial_sum_near_bound(err: torch.Tensor, du: torch.Tensor, bound: float) -> torch.Tensor:
    """OpenCV's stopping sum for pairs whose accurate sum is within 5% of the bound.

    OpenCV adds the per-pixel squared updates one by one into a float32 accumulator, which drops
    the small terms once the sum has grown (a few 0.1% low at 456x256). Where that can flip the
    stop decision, this recomputes the sum the same way (NumPy's float32 ``add.accumulate`` is a
    serial sum), so both backends stop at the same iteration. CPU tensors only.

    Args:
        err: (B,) accurate sums; du: (B, 2, H, W) the updates; bound: the float32 threshold.
    """
    near = ((err - bound).abs() <= 0.05 * bound).nonzero().flatten().tolist()
    if not near:
        return err
    err = err.clone()
    for i in near:
        d = du[i].numpy()
        terms = d[0] * d[0] + d[1] * d[1]  # float32, (u1 - u1k)^2 + (u2 - u2k)^2 per pixel
        err[i] = float(np.add.accumulate(terms.ravel())[-1])
    return err


def _solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    u: torch.Tensor,
    params: TVL1Params,
    check_every: int,
    compiled: bool,
) -> torch.Tensor:
    """All warps of one level for a batch; returns the refined flow (B, 2, H, W)."""
    b, h, w = i0.shape
    dev, dt = i0.device, i0.dtype
    gx, gy = centred_gradient(i1)
    i1_stack = torch.stack([i1, gx, gy], dim=1).double()  # (B, 3, H, W), see _prepare_warp
    i0 = i0.unsqueeze(1)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=dt, device=dev), torch.arange(w, dtype=dt, device=dev), indexing="ij"
    )
    base_grid = torch.stack([xs, ys], dim=-1)
    p = torch.zeros(b, 2, 2, h, w, dtype=dt, device=dev)  # reset per level, kept across warps
    bound = float(np.float32(float(params.epsilon) ** 2 * h * w))  # OpenCV's float threshold
    on_cpu = dev.type == "cpu"
    step_fn = _compiled_iterate() if compiled else None
    l_t_val = float(torch.tensor(params.lambda_ * params.theta, dtype=torch.float32))
    tau_theta = float(torch.tensor(params.tau / params.theta, dtype=torch.float32))
    theta_val = float(torch.tensor(params.theta, dtype=torch.float32))
    for _ in range(params.n_warps):
        wp_full = _prepare_warp(i0, i1_stack, base_grid, u)
        idx = torch.arange(b, device=dev)  # pairs of the full batch in the working batch
        wp, st = wp_full, _State(u, p, scratch=not compiled)
        active = torch.ones(b, dtype=torch.bool, device=dev)
        all_active = True  # known on the host: no pair frozen since the last check
        done = False
        it = 0
        for _outer in range(params.outer_iterations):
            if params.median_filter > 1:
                med = median_blur(st.u, params.median_filter)
                st.u.copy_(torch.where(active[:, None, None, None], med, st.u))
            for _inner in range(params.inner_iterations):
                # Between host checks some pairs may be frozen: mask their steps (no sync needed).
                if compiled:
                    scale = active.to(dt)[:, None, None, None]
                    st.u, st.p, err = step_fn(
                        st.u, st.p, wp.g, wp.rho_c, wp.neg_inv_g, scale, l_t_val, theta_val, tau_theta
                    )
                else:
                    scale = None if all_active else active.to(dt)[:, None, None, None]
                    err = _iterate(st, wp, l_t_val, theta_val, tau_theta, scale)
                    if on_cpu:
                        err = _serial_sum_near_bound(err, st.du, bound)
                active = active & (err > bound)
                all_active = False
                it += 1
                if it % check_every:
                    continue
                n_active = int(active.sum())
                all_active = n_active == active.numel()
                if n_active == 0:
                    done = True
                    break
                if n_active < active.numel():
                    # Drop frozen pairs: write the working batch back and continue with the rest.
                    if st.u is not u:
                        u[idx], p[idx] = st.u, st.p
                    keep = active.nonzero().squeeze(1)
                    idx, wp, active = idx[keep], wp.select(keep), active[keep]
                    all_active = True
                    st = _State(st.u[keep], st.p[keep], scratch=not compiled)
            if done:
                break
        if st.u is not u:  # the working batch is a compacted copy
            u[idx], p[idx] = st.u, st.p
    return u


@torch.inference_mode()
def torch_flow(
    prev: torch.Tensor,
    nxt: torch.Tensor,
    params: TVL1Params,
    check_every: int = 1,
    compiled: bool = False,
) -> torch.Tensor:
    """TV-L1 flow of a batch of pairs.

    Args:
        prev: (B, H, W) float32 first images on the 0-255 scale.
        nxt: (B, H, W) float32 second images, same device.
        params: TV-L1 parameters.
        check_every: iterations between host-side looks at the per-pair stop flags (1 on CPU,
            where the look is free; larger on CUDA to avoid a device sync per iteration). Results do
            not depend on it.
        compiled: run the iteration through ``torch.compile`` (fused kernels; meant for CUDA, where
            the eager iteration's ~20 memory passes dominate). Needs a working Inductor toolchain;
            first call compiles for a while. Not required for correctness; the CPU-only
            stopping-sum emulation of :func:`_serial_sum_near_bound` is skipped on this path.

    Returns:
        (B, 2, H, W) float32 flow, channel 0 = x, channel 1 = y, with prev(x) ~ next(x + flow).
    """
    b, h, w = prev.shape
    if prev.device.type == "cpu":
        # Diffusion into flat regions produces denormal floats, which are ~50x slower on x86
        # CPUs; flushing them to 0 changes values below 1e-38 only. Restored to torch's default.
        torch.set_flush_denormal(True)
        try:
            return _torch_flow(prev, nxt, params, check_every, compiled)
        finally:
            torch.set_flush_denormal(False)
    return _torch_flow(prev, nxt, params, check_every, compiled)


def _torch_flow(
    prev: torch.Tensor, nxt: torch.Tensor, params: TVL1Params, check_every: int, compiled: bool
) -> torch.Tensor:
    b, h, w = prev.shape
    sizes = pyramid_sizes(h, w, params)
    i0s, i1s = [prev], [nxt]
    for size in sizes[1:]:
        i0s.append(downsample(i0s[-1], size, params.scale_factor))
        i1s.append(downsample(i1s[-1], size, params.scale_factor))
    u = torch.zeros(b, 2, *sizes[-1], dtype=prev.dtype, device=prev.device)
    for level in range(len(sizes) - 1, -1, -1):
        u = _solve_level(i0s[level], i1s[level], u, params, check_every, compiled)
        if level:
            # Up-sample by the size ratio but scale the vectors by 1/scale_factor, as OpenCV does.
            u = resize_linear(u, sizes[level - 1]) * (1.0 / params.scale_factor)
    return u
