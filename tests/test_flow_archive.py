"""Flow quantisation, frame pairing and the official-layout archive writer/reader."""

from __future__ import annotations

import io
import tarfile

import cv2
import numpy as np
import pytest

from extractors.flow_archive import (
    FlowArchiveError,
    FlowArchiveWriter,
    dequantise_flow,
    flow_pairs,
    n_flow_frames,
    open_flow,
    quantise_flow,
    rgb_to_flow_index,
)


def smooth_flow(n: int, h: int, w: int, seed: int = 0, scale: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = rng.standard_normal((n, 2, h // 4, w // 4)).astype(np.float32)
    up = np.stack([[cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in pair] for pair in f])
    return (scale * up).astype(np.float32)


def test_quantise_matches_epic_mapping():
    b = 8.0
    v = np.array([0.0, b, -b, 100.0, -100.0, 4.0, -4.0, b * (2 * 10.5 / 255 - 1)], dtype=np.float32)
    flow = np.stack([v, -v])[None, :, None, :]  # (1, 2, 1, 8)
    q = quantise_flow(flow, b)
    assert q.shape == (1, 1, 8, 2) and q.dtype == np.uint8
    # 0 -> 127.5 -> 128 (half to even); +-B and beyond saturate; 4 -> 191.25 -> 191
    assert q[0, 0, :7, 0].tolist() == [128, 255, 0, 255, 0, 191, 64]
    assert q[0, 0, :7, 1].tolist() == [128, 0, 255, 0, 255, 64, 191]
    assert q[0, 0, 7, 0] in (10, 11)  # a float32 tie: either neighbour, never further


def test_quantise_round_trip_error_is_half_a_step():
    b = 8.0
    flow = smooth_flow(3, 16, 20, scale=3.0)
    back = dequantise_flow(quantise_flow(flow, b), b).transpose(0, 3, 1, 2)
    assert np.abs(back - flow).max() <= b / 255 + 1e-5


def test_quantise_rejects_non_finite_and_bad_shapes():
    flow = np.zeros((1, 2, 4, 4), np.float32)
    flow[0, 0, 1, 1] = np.nan
    with pytest.raises(FlowArchiveError, match="NaN"):
        quantise_flow(flow, 8.0)
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        quantise_flow(np.zeros((1, 4, 4, 2), np.float32), 8.0)
    with pytest.raises(TypeError):
        dequantise_flow(np.zeros(3, np.float32), 8.0)


def test_pairing_and_index_conversion():
    # EPIC-55 release settings: stride 2, dilation 3
    first, second = flow_pairs([1, 2, 3], stride=2, dilation=3)
    assert first.tolist() == [1, 3, 5] and second.tolist() == [4, 6, 8]
    assert n_flow_frames(8, 2, 3) == 3 and n_flow_frames(9, 2, 3) == 3 and n_flow_frames(10, 2, 3) == 4
    assert n_flow_frames(3, 2, 3) == 0
    assert n_flow_frames(100, 1, 1) == 99
    # the last flow frame's pair ends inside the video; one more would not
    n = n_flow_frames(10, 2, 3)
    assert flow_pairs([n], 2, 3)[1][0] <= 10 < flow_pairs([n + 1], 2, 3)[1][0]
    assert rgb_to_flow_index([1, 2, 3, 4, 5], stride=2).tolist() == [1, 1, 2, 2, 3]
    assert rgb_to_flow_index([1, 2, 3], stride=1).tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        rgb_to_flow_index([0], 1)


def test_writer_reader_round_trip_in_official_layout(tmp_path):
    b = 8.0
    flow = smooth_flow(5, 32, 48, scale=3.0)
    q = quantise_flow(flow, b)
    out = tmp_path / "flow" / "P01_101.tar"
    with FlowArchiveWriter(out, jpeg_quality=95) as w:
        w.write(q[:2])
        assert not out.exists()  # nothing that looks finished until the end
        w.write(q[2:])
    with tarfile.open(out) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert names[:4] == ["u/frame_0000000001.jpg", "v/frame_0000000001.jpg",
                         "u/frame_0000000002.jpg", "v/frame_0000000002.jpg"]
    assert len(names) == 10
    src = open_flow(out)
    assert src.n_frames == 5 and src.size == (48, 32)
    got = src.get([5, 1, 1])
    assert got.shape == (3, 32, 48, 2) and got.dtype == np.uint8
    for i, k in enumerate([5, 1, 1]):
        assert np.abs(got[i].astype(int) - q[k - 1].astype(int)).max() <= 4  # JPEG q95 on smooth fields
    err = dequantise_flow(got, b).transpose(0, 3, 1, 2) - flow[[4, 0, 0]]
    assert np.abs(err).mean() < 0.05
    assert sorted(p.name for p in out.parent.iterdir()) == ["P01_101.tar"]


def test_writer_leaves_nothing_on_error_or_when_empty(tmp_path):
    out = tmp_path / "x.tar"
    with pytest.raises(RuntimeError, match="boom"), FlowArchiveWriter(out) as w:
        w.write(np.zeros((2, 8, 8, 2), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FlowArchiveError, match="no flow frames"), FlowArchiveWriter(out):
        pass
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="size changed"), FlowArchiveWriter(out) as w:
        w.write(np.zeros((1, 8, 8, 2), np.uint8))
        w.write(np.zeros((1, 8, 10, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def _official_tar(path, frames, prefix="./", drop=(), corrupt=None):
    """A tar laid out like EPIC's flow_frames/PXX_YY.tar (./u/frame_*.jpg, ./v/frame_*.jpg)."""
    with tarfile.open(path, "w") as tar:
        for k, frame in enumerate(frames, start=1):
            for c, comp in enumerate("uv"):
                if (comp, k) in drop:
                    continue
                data = cv2.imencode(".jpg", frame[:, :, c])[1].tobytes()
                if corrupt == (comp, k):
                    data = b"not a jpeg"
                info = tarfile.TarInfo(f"{prefix}{comp}/frame_{k:010d}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_reads_official_archives_with_dot_prefix(tmp_path):
    q = quantise_flow(smooth_flow(3, 16, 24), 25.0)
    src = open_flow(_official_tar(tmp_path / "P01_01.tar", q))
    assert src.n_frames == 3 and src.size == (24, 16)
    assert np.abs(src.get([2]).astype(int) - q[1:2].astype(int)).max() <= 6


def test_bad_archives_name_the_file(tmp_path):
    with pytest.raises(FlowArchiveError, match=r"nope\.tar: flow archive not found"):
        open_flow(tmp_path / "nope.tar")
    (tmp_path / "junk.tar").write_bytes(b"junk" * 300)
    with pytest.raises(FlowArchiveError, match=r"junk\.tar: unreadable flow archive"):
        open_flow(tmp_path / "junk.tar")
    q = quantise_flow(smooth_flow(3, 16, 24), 8.0)
    with pytest.raises(FlowArchiveError, match=r"onlyu\.tar: .*u/ and v/ hold different frames"):
        open_flow(_official_tar(tmp_path / "onlyu.tar", q, drop={("v", 2)}))
    with pytest.raises(FlowArchiveError, match=r"gap\.tar: .*missing frame\(s\) \[2\]"):
        open_flow(_official_tar(tmp_path / "gap.tar", q, drop={("v", 2), ("u", 2)}))
    bad = open_flow(_official_tar(tmp_path / "badjpg.tar", q, corrupt=("v", 3)))
    with pytest.raises(FlowArchiveError, match=r"badjpg\.tar: \./v/frame_0000000003\.jpg is not a readable JPEG"):
        bad.get([3])
    with pytest.raises(FlowArchiveError, match=r"badjpg\.tar: flow frame number\(s\) \[4\] outside 1\.\.3"):
        bad.get([1, 4])
    rgb = tmp_path / "rgb.tar"
    with tarfile.open(rgb, "w") as tar:
        info = tarfile.TarInfo("frame_0000000001.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(FlowArchiveError, match=r"rgb\.tar: flow archive holds no u/frame_%010d\.jpg and v/"):
        open_flow(rgb)
    good = _official_tar(tmp_path / "good.tar", q)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(FlowArchiveError, match=r"cut\.tar"):
        open_flow(cut).get([1, 2, 3])
