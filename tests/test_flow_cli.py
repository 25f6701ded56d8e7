"""The flow stage entry point: video or frame archive in, official-layout flow archive out."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from test_video import write_pattern_video

from extractors.flow import FlowConfig, compute_video_flow, main
from extractors.flow_archive import dequantise_flow, n_flow_frames, open_flow
from extractors.video import open_frames
from m3em.epic.config import ConfigError
from m3em.runtime import DeviceError

REPO = Path(__file__).resolve().parents[1]


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random grey texture with strong gradients (good for TV-L1)."""
    rng = np.random.default_rng(seed)
    t = cv2.resize(rng.random((h // 6 + 1, w // 6 + 1)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(255 * (t - t.min()) / (t.max() - t.min()), 0, 255).astype(np.uint8)


def moving_frame_fn(dx: int):
    """Frame i is a window of a periodic texture moved ``dx`` px right per frame (content moves right)."""
    cache = {}

    def fn(i: int, size: tuple[int, int]) -> np.ndarray:
        w, h = size
        if "tex" not in cache:
            cache["tex"] = texture(h, 4 * w)
        tex = cache["tex"]
        grey = np.take(tex, np.arange(w) - dx * i, axis=1, mode="wrap")
        return np.repeat(grey[:, :, None], 3, axis=2)

    return fn


def write_config(tmp_path: Path, *, height: int, flow: dict | None = None, fast: bool = True) -> Path:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["decode"]["height"] = height
    # The EPIC extension's pairing (consecutive frames); the demo config's stride 3 / dilation 3 is
    # tested where stated.
    cfg["flow"].update(stride=1, dilation=1)
    if fast:
        cfg["flow"]["tvl1"].update(max_iterations=10, n_warps=2)
    cfg["flow"].update(flow or {})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("moving")
    return write_pattern_video(d / "moving.mp4", 12, 50, size=(112, 64), frame_fn=moving_frame_fn(1))


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 2)])
def test_cli_video_to_archive(tmp_path, moving_video, stride, dilation, capsys, caplog):
    cfg = write_config(tmp_path, height=64, flow={"stride": stride, "dilation": dilation})
    out = tmp_path / "flow" / "moving.tar"
    caplog.set_level(logging.INFO)
    rc = main(["--config", str(cfg), "--video-id", "moving", "--video", str(moving_video), "--out", str(out),
               "--fps", "50", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    src = open_flow(out)
    assert src.n_frames == n_flow_frames(12, stride, dilation)
    assert src.size == (112, 64)
    flow = dequantise_flow(src.get(list(range(1, src.n_frames + 1))), 8.0)
    inner = flow[:, 12:-12, 16:-16]
    # content moves +1 px per frame: u = +dilation, v = 0
    assert np.median(inner[..., 0]) == pytest.approx(dilation, abs=0.15)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.15)
    assert sorted(p.name for p in out.parent.iterdir()) == ["moving.tar"]
    assert "flow frames" in caplog.text


def test_cli_reads_official_frame_archive(tmp_path, moving_video):
    src = open_frames("moving", fps=50.0, height=64, video_path=moving_video)
    archive = tmp_path / "moving_frames.tar"
    with tarfile.open(archive, "w") as tar:
        for n, img in enumerate(src.get(list(range(1, src.n_frames + 1))), start=1):
            data = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
            info = tarfile.TarInfo(f"./frame_{n:010d}.jpg")
            info.size = data.size
            tar.addfile(info, io.BytesIO(data.tobytes()))
    cfg = write_config(tmp_path, height=64)
    out = tmp_path / "out.tar"
    assert main(["--config", str(cfg), "--video-id", "moving", "--frames", str(archive), "--out", str(out),
                 "--fps", "50", "--no-progress"]) == 0
    flow = dequantise_flow(open_flow(out).get([3, 4]), 8.0)
    assert np.median(flow[:, 12:-12, 16:-16, 0]) == pytest.approx(1.0, abs=0.15)


def test_cli_fps_from_video_table(tmp_path, moving_video):
    ann = tmp_path / "ann"
    ann.mkdir()
    for name in ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv"):
        (ann / name).write_text((REPO / "tests" / "data" / "epic" / name).read_text())
    (ann / "EPIC_100_video_info.csv").write_text("video_id,duration,fps,resolution\nmoving,0.24,25.0,112x64\n")
    cfg = yaml.safe_load(write_config(tmp_path, height=64).read_text())
    cfg["data"]["annotations_dir"] = str(ann)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "t.tar"
    assert main(["--config", str(tmp_path / "c.yaml"), "--video-id", "moving", "--video", str(moving_video),
                 "--out", str(out), "--no-progress"]) == 0
    # 12 frames at 50 fps read at 25 annotation fps: 6 annotation frames, each 2 decoded frames apart
    src = open_flow(out)
    assert src.n_frames == 5
    assert np.median(dequantise_flow(src.get([2]), 8.0)[0, 12:-12, 16:-16, 0]) == pytest.approx(2.0, abs=0.2)


def test_cli_bad_inputs_leave_no_output(tmp_path, moving_video, capsys):
    cfg = write_config(tmp_path, height=64)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def run(*src: str) -> str:
        rc = main(["--config", str(cfg), "--video-id", "v", *src, "--out", str(out_dir / "v.tar"), "--fps", "50",
                   "--no-progress"])
        assert rc == 1
        assert list(out_dir.iterdir()) == []  # no archive, no temporary file
        err = capsys.readouterr().err
        assert err.startswith("python -m extractors.flow: error: ") and err.count("\n") == 1, err
        return err

    assert "missing.mp4: video file not found" in run("--video", str(tmp_path / "missing.mp4"))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(moving_video.read_bytes()[: moving_video.stat().st_size // 2])
    assert "cut.mp4" in run("--video", str(cut))
    (tmp_path / "zero.mp4").write_bytes(b"")
    assert "zero.mp4: video file is empty" in run("--video", str(tmp_path / "zero.mp4"))
    (tmp_path / "frames.tar").write_bytes(b"garbage" * 100)
    assert "frames.tar: unreadable frame archive" in run("--frames", str(tmp_path / "frames.tar"))
    one = write_pattern_video(tmp_path / "one.mp4", 1, 50, size=(112, 64))
    assert "too few for one flow pair" in run("--video", str(one))


def test_flow_config_errors():
    with pytest.raises(ConfigError, match="opencv backend runs on the CPU only"):
        FlowConfig(backend="opencv", device="cuda")
    with pytest.raises(ConfigError, match="flow.backend"):
        FlowConfig(backend="raft")


def test_cuda_requested_without_gpu_is_an_error(tmp_path, moving_video):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    src = open_frames("moving", fps=50.0, height=64, video_path=moving_video)
    with pytest.raises(DeviceError, match="flow.device.*CUDA is not available"):
        compute_video_flow(src, tmp_path / "x.tar", FlowConfig(backend="torch", device="cuda"), progress=False)
    assert list(tmp_path.iterdir()) == []


# Resident memory after every chunk written by one flow run (a subprocess, so that nothing of
# the test process counts).
RSS_TRACE = """
import json, sys
from extractors import flow_archive
from extractors.flow import main

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

trace = []
write = flow_archive.FlowArchiveWriter.write

def traced(self, pixels):
    write(self, pixels)
    trace.append((self.n_written, rss_mb()))

flow_archive.FlowArchiveWriter.write = traced
rc = main(sys.argv[1:])
print("TRACE", json.dumps(trace))
sys.exit(rc)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_stays_flat_on_long_videos(tmp_path):
    """Resident memory stops growing once the first chunks are through, however long the video.

    Between the first quarter and the end of an 800-frame video the process may not grow by
    more than 6 MB; holding the float flow of those 600 frames would take
    600 x 2 x 54 x 96 x 4 B = 25 MB, their decoded frames 9 MB.
    """
    tvl1 = {**yaml.safe_load((REPO / "config.yaml").read_text())["flow"]["tvl1"], "max_iterations": 3, "n_warps": 1}
    cfg = write_config(tmp_path, height=54, flow={"tvl1": tvl1, "batch_size": 16})
    n = 800
    video = write_pattern_video(tmp_path / "long.mp4", n, 50, size=(96, 54), frame_fn=moving_frame_fn(1))
    out = tmp_path / "long.tar"
    proc = subprocess.run([sys.executable, "-c", RSS_TRACE, "--config", str(cfg), "--video-id", "long",
                           "--video", str(video), "--out", str(out), "--fps", "50", "--no-progress"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout.split("TRACE")[1])
    assert trace[-1][0] == n - 1 == open_flow(out).n_frames
    quarter = next(rss for k, rss in trace if k >= n // 4)
    peak_after = max(rss for k, rss in trace if k >= n // 4)
    print(json.dumps({"rss_mb_at_quarter": quarter, "peak_mb_after": peak_after, "end_mb": trace[-1][1]}))
    assert peak_after - quarter < 6, (quarter, peak_after)


def test_cli_threads_override_is_checked_and_changes_no_value(tmp_path, moving_video, capsys):
    # The workflow passes the job's granted threads (--threads {threads}); the result must not depend on it.
    cfg = write_config(tmp_path, height=64)
    outs = {}
    for threads in ("1", "2"):
        outs[threads] = tmp_path / threads / "moving.tar"
        assert main(["--config", str(cfg), "--video-id", "moving", "--video", str(moving_video), "--out",
                     str(outs[threads]), "--fps", "50", "--threads", threads, "--no-progress"]) == 0
    a, b = open_flow(outs["1"]), open_flow(outs["2"])
    frames = list(range(1, a.n_frames + 1))
    np.testing.assert_array_equal(a.get(frames), b.get(frames))
    rc = main(["--config", str(cfg), "--video-id", "moving", "--video", str(moving_video), "--out",
               str(tmp_path / "bad" / "moving.tar"), "--fps", "50", "--threads", "0", "--no-progress"])
    assert rc == 1
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "moving.tar").exists()
