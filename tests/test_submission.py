"""Submission writer and checker: round trip, every refusal, every reported problem."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import yaml
from workflow_util import REPO as REPO_ROOT

from m3em import check_submission as chk
from m3em import submission as sub
from m3em.epic.annotations import EpicAnnotations
from m3em.epic.scores import Scores, log_softmax, softmax, write_scores


def _scores(ids, seed=0, meta=None):
    rng = np.random.default_rng(seed)
    return Scores(tuple(ids), rng.normal(size=(len(ids), 97)).astype(np.float32),
                  rng.normal(size=(len(ids), 300)).astype(np.float32), meta or {})


IDS = [f"P01_10{i}_{i}" for i in range(8)]


def _write(path, scores, ids=IDS, **kw):
    kw = {"sls_pt": 2, "sls_tl": 4, "sls_td": 3, **kw}
    sub.write_submission(path, scores, ids, **kw)


def _read(path):
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["test.json"]
        info = zf.getinfo("test.json")
        assert info.compress_type == zipfile.ZIP_DEFLATED
        return json.loads(zf.read("test.json"))


def test_round_trip(tmp_path):
    s = _scores(IDS[::-1])  # any row order in the scores
    _write(tmp_path / "submission.zip", s)
    data = _read(tmp_path / "submission.zip")
    assert data["version"] == "0.2" and data["challenge"] == "domain_adaptation"
    assert (data["sls_pt"], data["sls_tl"], data["sls_td"]) == (2, 4, 3)
    assert list(data["results_target"]) == IDS
    entry = data["results_target"][IDS[0]]
    assert list(entry["verb"]) == [str(i) for i in range(97)]
    assert list(entry["noun"]) == [str(i) for i in range(300)]
    row = s.select([IDS[0]])
    verb = np.array([entry["verb"][str(i)] for i in range(97)])
    np.testing.assert_allclose(verb, log_softmax(row.verb)[0], atol=1e-6)  # log-probabilities
    np.testing.assert_allclose(softmax(verb[None])[0], softmax(row.verb)[0], rtol=1e-5)
    assert chk.check_submission(tmp_path / "submission.zip", IDS) == []


@pytest.mark.parametrize(
    "scores,kw,match",
    [
        (_scores(IDS[:-2]), {}, r"2 narration id\(s\) of the test split have no scores: P01_106_6, P01_107_7"),
        (_scores(IDS + ["P99_999_9"]), {}, r"not in the test split: P99_999_9"),
        (Scores(tuple(IDS), np.zeros((8, 96), np.float32), np.zeros((8, 300), np.float32), {}), {},
         "verb scores have 96 classes, expected 97"),
        (Scores(tuple(IDS), np.zeros((8, 97), np.float32), np.zeros((8, 301), np.float32), {}), {},
         "noun scores have 301 classes, expected 300"),
        (Scores(tuple(IDS), np.where(np.arange(97) == 5, np.nan, 0.0)[None].repeat(8, 0).astype(np.float32),
                np.zeros((8, 300), np.float32), {}), {}, r"verb scores are NaN or inf for 8 narration id"),
        (Scores(tuple(IDS), np.zeros((8, 97), np.float32),
                np.where(np.arange(8)[:, None] == 3, np.inf, np.zeros((8, 300))).astype(np.float32), {}), {},
         r"noun scores are NaN or inf for 1 narration id\(s\): P01_103_3"),
        (_scores(IDS, meta={"uses_hand_object_boxes": True}), {"sls_tl": 3}, "hand-object boxes: sls_tl"),
        (_scores(IDS), {"sls_pt": 7}, "sls_pt must be an integer 0-5"),
    ],
)
def test_writer_refuses_and_names_the_problem(tmp_path, scores, kw, match):
    with pytest.raises(sub.SubmissionError, match=match):
        _write(tmp_path / "submission.zip", scores, **kw)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_writer_lists_every_problem(tmp_path):
    bad = Scores(tuple(IDS[1:]), np.zeros((7, 96), np.float32), np.full((7, 300), np.nan, np.float32), {})
    with pytest.raises(sub.SubmissionError) as err:
        _write(tmp_path / "s.zip", bad)
    msg = str(err.value)
    assert "P01_100_0" in msg and "96 classes" in msg and "noun scores are NaN" in msg


def _zip(path, data):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("test.json", json.dumps(data))


def _good(tmp_path):
    _write(tmp_path / "good.zip", _scores(IDS))
    return _read(tmp_path / "good.zip")


def test_checker_names_each_problem(tmp_path):
    data = _good(tmp_path)
    r = data["results_target"]
    del r[IDS[0]]                                   # missing id
    r["P77_777_7"] = r[IDS[1]]                      # extra id
    r[IDS[2]]["verb"].pop("96")                     # wrong class count
    r[IDS[3]]["noun"]["300"] = r[IDS[3]]["noun"].pop("0")  # wrong key, right count
    r[IDS[4]]["verb"]["3"] = float("nan")           # NaN
    r[IDS[5]]["noun"]["7"] = "high"                 # non-numeric
    del r[IDS[6]]["noun"]                           # no noun scores
    r[IDS[7]]["extra"] = {}                         # wrong entry key
    data["version"] = "0.1"
    data["sls_tl"] = 9
    data["results"] = {}
    _zip(tmp_path / "bad.zip", data)
    problems = chk.check_submission(tmp_path / "bad.zip", IDS)
    text = "\n".join(problems)
    for needle in [
        "1 narration id(s) of the test split are missing: P01_100_0",
        "1 narration id(s) are not in the test split: P77_777_7",
        f"'verb' has 96 classes, expected 97: {IDS[2]}",
        f"'noun' has key(s) outside \"0\"..\"299\" (e.g. ['300']): {IDS[3]}",
        f"'verb' has NaN or inf score(s): {IDS[4]}",
        f"'noun' has non-numeric score(s): {IDS[5]}",
        f"no 'noun' scores: {IDS[6]}",
        f"unknown key(s) ['extra'] in the entry (expected 'verb' and 'noun'): {IDS[7]}",
        "version is '0.1'",
        "sls_tl must be an integer 0-5, got 9",
        "unknown top-level key(s) ['results']",
    ]:
        assert needle in text, f"{needle!r} not reported in:\n{text}"


def test_checker_zip_layout_problems(tmp_path):
    assert "file not found" in chk.check_submission(tmp_path / "none.zip", IDS)[0]
    (tmp_path / "x.zip").write_bytes(b"junk")
    assert "not a zip file" in chk.check_submission(tmp_path / "x.zip", IDS)[0]
    with zipfile.ZipFile(tmp_path / "y.zip", "w") as zf:
        zf.writestr("sub/test.json", "{}")
    assert "no member 'test.json'" in chk.check_submission(tmp_path / "y.zip", IDS)[0]
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("test.json", "{not json")
    assert "not valid JSON" in chk.check_submission(tmp_path / "z.zip", IDS)[0]
    _zip(tmp_path / "k.zip", {"results_target": {}})
    assert any("missing top-level key(s) ['version', 'challenge', 'sls_pt', 'sls_tl', 'sls_td']" in p
               for p in chk.check_submission(tmp_path / "k.zip", IDS))


def test_cli_on_the_annotation_slice(tmp_path, epic_slice, capsys):
    """Writer CLI from config + checker CLI on the 40-row official slice (both ways of naming the split)."""
    cfg = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    cfg["data"]["annotations_dir"] = str(epic_slice)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    ids = EpicAnnotations.open(epic_slice).split("target_test", labelled=False)["narration_id"].tolist()
    s = _scores(ids, meta={"kind": "logits"})
    write_scores(tmp_path / "ens.npz", s.narration_ids, s.verb, s.noun, s.meta)
    out = tmp_path / "submission.zip"
    assert sub.main(["--config", str(tmp_path / "c.yaml"), "--scores", str(tmp_path / "ens.npz"), "--out", str(out)]) == 0
    assert chk.main([str(out), "--annotations", str(epic_slice)]) == 0
    split_file = epic_slice / "UDA_annotations" / "EPIC_100_uda_target_test_timestamps.csv"
    assert chk.main([str(out), "--annotations", str(split_file)]) == 0
    # Against another split every id is wrong, and the exit code says so.
    assert chk.main([str(out), "--annotations", str(epic_slice), "--split", "target_val"]) == 1
    assert "are missing" in capsys.readouterr().err


def test_full_target_test_split(tmp_path, official_epic):
    """All 5,909 official target-test ids: write, then check; a dropped id is caught."""
    ids = EpicAnnotations.open(official_epic).split("target_test", labelled=False)["narration_id"].tolist()
    assert len(ids) == 5909
    s = _scores(ids, seed=1)
    out = tmp_path / "submission.zip"
    _write(out, s, ids=ids)
    assert chk.check_submission(out, ids) == []
    with pytest.raises(sub.SubmissionError, match="1 narration id"):
        _write(tmp_path / "short.zip", s.select(ids[1:]), ids=ids)


def test_checker_refuses_duplicate_keys(tmp_path):
    data = _good(tmp_path)
    text = json.dumps(data)
    entry = json.dumps(data["results_target"][IDS[1]])
    # The same narration id twice (json.loads alone keeps the last and sees nothing wrong).
    dup_id = text.replace(f'"{IDS[0]}": ', f'"{IDS[1]}": {entry}, "{IDS[0]}": ', 1)
    # And a class key twice inside one entry's scores.
    dup_class = text.replace('"verb": {"0": ', '"verb": {"5": 1.0, "0": ', 1)
    for name, raw, key in (("id.zip", dup_id, IDS[1]), ("cls.zip", dup_class, "5")):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr("test.json", raw)
        problems = chk.check_submission(tmp_path / name, IDS)
        assert any("duplicate key(s)" in p and key in p for p in problems), problems
    assert chk.check_submission(tmp_path / "good.zip", IDS) == []
