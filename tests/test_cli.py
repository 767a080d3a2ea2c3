import json, re, subprocess, sys
from pathlib import Path
import pytest
from headbook.cli import build_parser, main, demo, run_experiment

EXE = Path(sys.executable).parent / "headbook"


def test_every_subcommand_has_help():
    sub = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "assets", "run", "eval", "landmarks", "reconstruct"} <= set(sub)
    for nested in (["eval", "now"], ["eval", "now-baseline"], ["data", "now-synthetic"]):
        r = subprocess.run([str(EXE), *nested, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: headbook" in r.stdout, nested
    for name in sub:
        r = subprocess.run([str(EXE), name, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: headbook" in r.stdout, name


def test_demo_writes_obj_png_viewer(tmp_path):
    paths = demo(tmp_path / "out", "synthhead", seed=1)
    for k in ("mesh", "render", "viewer"):
        p = Path(paths[k]); assert p.exists() and p.stat().st_size > 1000, k
    from headbook.geometry.mesh import load_mesh
    from headbook.models import load_head_model
    v, f = load_mesh(paths["mesh"])
    assert v.shape == (load_head_model("synthhead").n_verts, 3)
    import matplotlib.image as mpimg
    img = mpimg.imread(paths["render"])
    assert img.shape[0] == 320 and img.shape[1] == 960 and img[..., :3].std() > 0.05
    assert "<html" in Path(paths["viewer"]).read_text()[:2000].lower()


def test_run_unknown_experiment_is_a_clear_error(capsys, tmp_path):
    assert main(["run", "no_such_experiment", "--runs-dir", str(tmp_path)]) == 2
    assert "no experiment notebook" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(capsys, tmp_path):
    assert main(["demo", "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown head model" in capsys.readouterr().err


def test_landmarks_cli_good_and_bad_photo(tmp_path, capsys):
    import matplotlib.cbook
    good = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bad = tmp_path / "not_an_image.jpg"; bad.write_text("hello")
    rc = main(["landmarks", str(good), str(bad), "--out", str(tmp_path / "lm")])
    out = capsys.readouterr().out
    assert rc == 1 and "grace_hopper_overlay.png" in out and "not_an_image.jpg: error" in out
    import numpy as np
    assert np.load(tmp_path / "lm" / "grace_hopper_68.npy").shape[0] == 68


def test_eval_now_cli_on_a_tiny_dataset(tmp_path, capsys):
    "A NoW-layout folder with one subject whose prediction equals its scan: the CLI prints ~0 mm."
    import numpy as np, trimesh
    from headbook.data.now import write_pp, write_prediction
    root, pred = tmp_path / "now", tmp_path / "pred"
    scan = trimesh.creation.icosphere(subdivisions=4, radius=0.08)
    v = np.asarray(scan.vertices) * [1.0, 1.2, 0.9]
    lm = v[[np.argmax(v[:, 0]), 10, 20, np.argmin(v[:, 0]), np.argmax(v[:, 2]), 30, 40]]
    (root / "scans" / "S1").mkdir(parents=True); (root / "scans_lmks_onlypp" / "S1").mkdir(parents=True)
    trimesh.Trimesh(v * 1000, scan.faces, process=False).export(root / "scans" / "S1" / "natural_head_rotation.000001.obj")
    write_pp(root / "scans_lmks_onlypp" / "S1" / "natural_head_rotation.000001_picked_points.pp", lm * 1000)
    line = "S1/multiview_neutral/IMG_0001.jpg"
    (root / "imagepathsvalidation.txt").write_text(line + "\n")
    write_prediction(pred, line, v, scan.faces, lm)
    rc = main(["eval", "now", "--dataset", str(root), "--pred", str(pred)])
    out = capsys.readouterr().out
    assert rc == 0 and "| all | 1 |" in out
    med = float(out.split("| all | 1 |")[1].split("|")[0])
    assert med < 1e-3


def test_reconstruct_cli_one_good_one_bad(tmp_path, capsys):
    import json, matplotlib.cbook
    good = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bad = tmp_path / "broken.png"; bad.write_bytes(b"\x89PNG not really")
    rc = main(["reconstruct", str(good), str(bad), "--out", str(tmp_path / "rec"), "--preset", "smoke"])
    out = capsys.readouterr().out
    assert rc == 1 and "broken.png: error" in out and "grace_hopper" in out
    d = tmp_path / "rec" / "grace_hopper"
    for f in ("mesh.obj", "params.npz", "overlay.png", "viewer.html", "fit.json"):
        assert (d / f).exists(), f
    fj = json.loads((d / "fit.json").read_text())
    assert len(fj["landmarks_detected"]) == 68 and len(fj["landmarks_fitted"]) == 68
    assert 0 < fj["landmark_nme"] < 0.12          # smoke preset measured 0.07 on this photo


def test_synthetic_now_and_baseline_cli(tmp_path, capsys):
    root, pred = tmp_path / "NoW", tmp_path / "pred"
    assert main(["data", "now-synthetic", str(root), "--subjects", "1", "--images", "1", "--size", "96"]) == 0
    assert (root / "imagepathsvalidation.txt").exists() or (root / "imagepathstest.txt").exists()
    split = "validation" if (root / "imagepathsvalidation.txt").read_text().strip() else "test"
    assert main(["eval", "now-baseline", str(root), str(pred), "--kind", "oracle", "--split", split]) == 0
    assert "oracle predictions" in capsys.readouterr().out
    assert any(pred.rglob("*.obj"))


@pytest.mark.parametrize("name,params", [("eval_now", {}), ("train_sheap", {"preset": "smoke"}),
                                         ("train_nphm_identity", {"preset": "smoke", "heldout": 1,
                                                                  "fit_preset": "smoke"}),
                                         ("train_tempeh", {"preset": "smoke"})])
def test_headbook_run_executes_experiments_through_papermill(tmp_path, monkeypatch, capsys, name, params):
    "`headbook run NAME -p key=value` keeps the executed notebook and the run's files in one runs/NAME/<timestamp>/."
    import json
    monkeypatch.chdir(tmp_path)                    # the default, relative runs folder (issue 17: it nested itself)
    args = ["run", name]
    for k, v in params.items(): args += ["-p", f"{k}={v}"]
    assert main(args) == 0
    (run_dir,) = list((tmp_path / "runs" / name).iterdir())
    out, err = capsys.readouterr()
    assert out.strip().endswith(f"run written to {run_dir}")                           # printed truthfully
    if name != "eval_now":         # the training's progress.log, kept in the run folder, was shown on stderr
        log = (run_dir / "progress.log").read_text().splitlines()
        desc = {"train_sheap": "SHeaP", "train_nphm_identity": "NPHM identity", "train_tempeh": "TEMPEH coarse"}[name]
        assert any(re.search(rf" {desc} step \d+/\d+  loss \S+ .* s/step  ETA \S+$", l) for l in log), log
        assert log and all(l in err.splitlines() for l in log) and "Executing" in err   # papermill's counter too
    assert not (run_dir / "runs").exists()
    nb = json.loads((run_dir / f"{name}.ipynb").read_text())
    injected = [c for c in nb["cells"] if c.get("metadata", {}).get("tags") == ["injected-parameters"]]
    assert len(injected) == bool(params) and all(f"{k} = " in "".join(injected[0]["source"]) for k in params)
    if name == "train_sheap":
        assert f'run_dir = "{run_dir}"' in "".join(injected[0]["source"])                # absolute
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert lines and {"step", "loss"} <= set(json.loads(lines[-1]))
        assert any(run_dir.rglob("*.pt")) and (run_dir / "config.json").exists()
        # resuming it with other settings is refused (one line), then applied when asked
        again = ["run", name, "-p", f"run_dir={run_dir}", "-p", 'overrides={"lr": 0.5, "steps": 4}']
        assert main(again) == 1
        err = capsys.readouterr().err.strip()                    # papermill's progress bar, then one line
        assert err.splitlines()[-1].startswith("headbook run: error: train_sheap stopped in cell")
        assert "Traceback" not in err
        assert "ResumeSettingsError" in err and "lr 0.001 -> 0.5" in err and "allow_changes" in err
        assert json.loads((run_dir / "config.json").read_text())["lr"] == 1e-3
        assert main(again + ["-p", "allow_changes=true", "--quiet"]) == 0
        out, err = capsys.readouterr()
        assert out.strip() == f"run written to {run_dir}" and " step " not in err and "Executing" not in err
        log = (run_dir / "progress.log").read_text()                 # the resume appended its lines all the same
        assert "SHeaP steps 4-4 of 4 on cpu, resumed from step 3" in log and "SHeaP finished step 4/4" in log
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["lr"] == pytest.approx(0.5 * 0.05)
        assert list(tmp_path.joinpath("runs", name).iterdir()) == [run_dir]               # still one run folder
    if name == "train_nphm_identity":
        assert (run_dir / "checkpoints").is_dir() and (run_dir / "loss_curve.png").exists()
        held = json.loads((run_dir / "heldout.json").read_text())
        assert {r["row"] for r in held["rows"]} == {"fit", "mean code"} and held["summary"]["fit"]["head_chamfer_l1"] > 0
    if name == "train_tempeh":                     # the coarse stage in the run folder, the refinement in refine/
        assert (run_dir / "checkpoints").is_dir() and (run_dir / "refine" / "checkpoints").is_dir()
        held = json.loads((run_dir / "heldout.json").read_text())
        assert held["test"]["frames"] == 1 and held["test"]["refined_s2m_median_mm"] > 0


def test_headbook_run_refuses_unknown_parameters_and_presets(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "train_sheap", "-p", "steps=50"]) == 2                            # before anything runs
    err = capsys.readouterr().err
    assert "train_sheap has no parameter steps; its parameters: preset, overrides" in err and "-p overrides" in err
    assert not (tmp_path / "runs").exists()
    assert main(["run", "train_sheap", "-p", "preset=big"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == ("headbook run: error: train_sheap stopped in cell 4: KeyError: "
                                    "unknown preset 'big'; presets: ['paper', 'small', 'smoke']")
    assert "Traceback" not in err and not (tmp_path / "runs").exists()                  # no empty run folder left
    assert main(["run", "train_sheap", "-p", 'overrides={"nope": 1}']) == 1
    assert "SHeaPConfig has no field 'nope'" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def _notebook(cells: list[str]) -> dict:
    "A notebook whose first cell is papermill's parameters cell."
    cell = lambda src, tags: dict(cell_type="code", execution_count=None, id=f"c{len(src)}{len(tags)}",
                                  metadata={"tags": tags}, outputs=[], source=src)
    return dict(cells=[cell(c, ["parameters"] if i == 0 else []) for i, c in enumerate(cells)], nbformat=4,
                nbformat_minor=5, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})


def test_headbook_run_streams_progress_while_the_notebook_runs(tmp_path):
    """The lines reach the caller while the kernel still runs: the notebook's last cell waits until the caller has
    seen the training's last line (a stream that only arrived at the end would time it out)."""
    nbs = tmp_path / "nbs"; nbs.mkdir()
    (nbs / "stream.ipynb").write_text(json.dumps(_notebook([
        'run_dir = ""\nmarker = ""\nsteps = 3',
        "import time, torch\nfrom pathlib import Path\nfrom headbook.train.loop import train\n"
        "net = torch.nn.Linear(2, 1); opt = torch.optim.SGD(net.parameters(), 0.1); X = torch.randn(8, 2)\n"
        "train(lambda s: {'loss': net(X).pow(2).mean()}, net, opt, steps, run_dir, progress=False, progress_secs=0, "
        "desc='toy')",
        "t0 = time.time()\nwhile not Path(marker).exists():\n"
        "    if time.time() - t0 > 60: raise TimeoutError('no progress line reached the caller while the kernel ran')\n"
        "    time.sleep(0.05)"])))
    marker, seen = tmp_path / "seen", []
    def on_progress(line):
        seen.append(line)
        if " toy finished step " in line: marker.write_text(line)
    run = run_experiment("stream", {"marker": str(marker)}, tmp_path / "runs", nbs_dir=nbs, on_progress=on_progress,
                         progress_bar=False)
    assert marker.exists() and seen == (run / "progress.log").read_text().splitlines()
    step = re.compile(r" toy step (\d)/\d  loss \S+  lr 0.1  \S+ s/step  ETA \S+$")
    assert [step.search(l)[1] for l in seen[1:4]] == list("123") and " toy finished step 3/3 in " in seen[-1]
    # a resumed run shows only its own new lines
    seen.clear(); marker.unlink()
    run_experiment("stream", {"marker": str(marker), "run_dir": str(run), "steps": 5}, nbs_dir=nbs,
                   on_progress=on_progress, progress_bar=False)
    assert " toy steps 4-5 of 5 on cpu, resumed from step 3" in seen[0] and marker.exists()
    assert [step.search(l)[1] for l in seen[1:3]] == list("45") and len(seen) == 5, seen
