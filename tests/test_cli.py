import subprocess, sys
from pathlib import Path
import pytest
from headbook.cli import build_parser, main, demo

EXE = Path(sys.executable).parent / "headbook"


def test_every_subcommand_has_help():
    sub = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "assets", "run"} <= set(sub)
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
