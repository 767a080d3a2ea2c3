import json, re, subprocess, sys
from pathlib import Path
import numpy as np
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


@pytest.fixture(scope="module")
def talking_head(tmp_path_factory):
    from headbook.data.avatar import TalkingHeadSpec, write_talking_head
    return write_talking_head(tmp_path_factory.mktemp("th") / "clip", "synthhead",
                              TalkingHeadSpec(n_train=8, n_test=2, image_size=48), seed=1)


def test_track_cli_writes_the_talking_head_layout(talking_head, tmp_path, capsys):
    from headbook.data.avatar import read_avatar_video
    out = tmp_path / "tracked"
    rc = main(["track", str(talking_head / "train"), "--out", str(out), "--preset", "smoke", "--image-size", "48",
               "--test-frames", "2"])
    assert rc == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "tracked 8 frames (6 train, 2 test)" in said and '"data.root"' in said
    tr, te = read_avatar_video(out / "train"), read_avatar_video(out / "test")
    assert (len(tr), len(te)) == (6, 2) and tr.params["jaw_pose"].shape == (6, 3)
    assert json.loads((out / "track.json").read_text())["landmark_error_px_mean"] < 1.5
    # bad folders: a clear message, exit status 2, nothing written
    empty = tmp_path / "empty"; (empty / "frames").mkdir(parents=True)
    assert main(["track", str(empty), "--out", str(tmp_path / "o1")]) == 2
    assert "holds no images" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    assert main(["track", str(talking_head / "train"), "--out", str(out)]) == 2          # out exists
    assert "already exists" in capsys.readouterr().err


@pytest.fixture(scope="module")
def smoke_avatar(tmp_path_factory):
    from headbook.imavatar.train import imavatar_config, train_imavatar
    run = tmp_path_factory.mktemp("ima") / "run"
    train_imavatar(imavatar_config("smoke"), run_dir=run, progress=False)
    return run


def test_animate_cli_renders_frames_and_meshes(smoke_avatar, tmp_path, capsys):
    from PIL import Image
    from headbook.geometry.mesh import load_mesh
    out = tmp_path / "anim"
    rc = main(["animate", "--model", str(smoke_avatar), "--params", str(smoke_avatar / "data" / "test"),
               "--out", str(out), "--meshes", "--mesh-resolution", "24", "--size", "24"])
    assert rc == 0, capsys.readouterr().err
    pngs = sorted((out / "frames").glob("*.png"))
    assert [p.name for p in pngs] == ["000000.png", "000001.png"]                  # the smoke preset's 2 test frames
    im = np.asarray(Image.open(pngs[0]))
    assert im.shape == (24, 24, 3) and im.std() > 0                                  # not a blank frame
    v, f = load_mesh(out / "meshes" / "000001.obj")
    assert len(v) > 100 and len(f) > 100 and np.isfinite(v).all()
    assert json.loads((out / "animate.json").read_text())["frames"] == 2


def test_animate_cli_refuses_bad_checkpoints_and_parameters(smoke_avatar, tmp_path, capsys):
    import torch
    from headbook.train.loop import save_checkpoint
    out = tmp_path / "anim"
    params = smoke_avatar / "data" / "test" / "params.npz"
    def refused(argv, match):
        assert main(["animate", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert re.search(match, err), err
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".anim")]
    refused(["--model", str(tmp_path / "no_run"), "--params", str(params)], "no IMavatar checkpoint")
    other = save_checkpoint(tmp_path / "other.pt", step=1, model=torch.nn.Linear(2, 2), extra={"config": {"epochs": 1}})
    refused(["--model", str(other), "--params", str(params)], "is not an IMavatar checkpoint")
    z = dict(np.load(params))
    bad = dict(z); bad["expression"] = z["expression"].copy(); bad["expression"][1, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **bad)
    refused(["--model", str(smoke_avatar), "--params", str(tmp_path / "nan.npz")], "expression is NaN or infinite at frame 000001")
    bad = dict(z); bad["expression"] = z["expression"][:, :5]
    np.savez(tmp_path / "narrow.npz", **bad)
    refused(["--model", str(smoke_avatar), "--params", str(tmp_path / "narrow.npz")], "expression has 5 values per frame")
    bad = dict(z); bad["jaw_pose"] = z["jaw_pose"][:1]
    np.savez(tmp_path / "rows.npz", **bad)
    refused(["--model", str(smoke_avatar), "--params", str(tmp_path / "rows.npz")], "disagree on the number of frames")
    refused(["--model", str(smoke_avatar), "--params", str(tmp_path)], "holds no params.npz")


def test_track_then_train_then_animate(talking_head, tmp_path, capsys):
    "The whole path of issue 14: a frame folder -> headbook track -> train_imavatar on it -> headbook animate."
    from headbook.imavatar.train import imavatar_config, train_imavatar
    tracked, run, out = tmp_path / "tracked", tmp_path / "run", tmp_path / "anim"
    assert main(["track", str(talking_head / "train"), "--out", str(tracked), "--preset", "smoke",
                 "--image-size", "48", "--test-frames", "2"]) == 0
    res = train_imavatar(imavatar_config("smoke", {"data.root": str(tracked)}), run_dir=run, progress=False)
    assert res.step > 0 and all(np.isfinite(res.losses))
    assert main(["animate", "--model", str(run), "--params", str(tracked / "test"), "--out", str(out)]) == 0
    assert len(list((out / "frames").glob("*.png"))) == 2
    assert json.loads((out / "animate.json").read_text())["params"] == str(tracked / "test" / "params.npz")
