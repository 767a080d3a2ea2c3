"NPHM fitting: a fit beats the mean code, outputs on disk, and clear refusals of bad clouds and checkpoints."
import json
import numpy as np
import pytest
import torch
from headbook.data.points import depth_scan, check_points
from headbook.eval.distance import point_to_mesh_distance
from headbook.nphm.fit import fit_pointcloud, fit_config, nphm_mesh, head_box, fit_files
from headbook.nphm.model import to_nphm, from_nphm
from headbook.nphm.train import nphm_config, train_nphm, load_nphm, NPHMData


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("nphm")
    cfg = nphm_config("smoke", {"steps": 80, "lr": 2e-3, "lr_codes": 5e-3, "ckpt_every": 80,
                                "data.n_identities": 6, "batch_size": 3})
    train_nphm(cfg, d / "id", progress=False)
    return d / "id", load_nphm(d / "id")


def _scan_to_mesh(points_m, mesh):
    return point_to_mesh_distance(points_m.numpy(), from_nphm(mesh.verts).numpy(), mesh.faces.numpy()).distances.mean()


def test_a_fit_of_a_held_out_cloud_lowers_the_surface_distance_from_the_mean_codes(trained):
    _, t = trained
    data = NPHMData(t.config.data)
    v = from_nphm(data.mesh(3, 0, split="test"))               # a held-out head
    scan = depth_scan(v, data.faces, image_size=64)
    cfg = fit_config("smoke", {"steps": 60, "n_points": 1000, "fit_expression": False})
    f = fit_pointcloud(t.model, to_nphm(scan.points), cfg)
    box = head_box(t.layout.mean)
    fitted = nphm_mesh(t.model, f.id_code, box=box, resolution=40)
    mean = nphm_mesh(t.model, torch.zeros_like(f.id_code), box=box, resolution=40)
    d_fit, d_mean = _scan_to_mesh(scan.points, fitted), _scan_to_mesh(scan.points, mean)
    assert d_fit < 0.9 * d_mean, (d_fit, d_mean)


def test_fit_files_writes_the_results_and_scores_against_a_reference(trained, tmp_path):
    run, t = trained
    from headbook.geometry.mesh import save_mesh
    data = NPHMData(t.config.data)
    v = from_nphm(data.mesh(0, 0, split="test"))
    save_mesh(tmp_path / "ref.obj", v, data.faces)
    scan = depth_scan(v, data.faces, image_size=48)
    np.save(tmp_path / "cloud.npy", torch.cat([scan.points, scan.normals], 1).numpy())
    res = fit_files([tmp_path / "cloud.npy"], run, tmp_path / "out", reference=tmp_path / "ref.obj",
                    fit=fit_config("smoke"))
    d = tmp_path / "out" / "cloud"
    assert {p.name for p in d.iterdir()} == {"mesh.obj", "codes.npz", "fit.json", "viewer.html"}
    info = json.loads((d / "fit.json").read_text())
    assert info["metrics_mm"]["head"]["chamfer_l1"] > 0 and info["kind"] == "nphm"
    assert res[0]["points"] == len(scan.points)
    # the same cloud in millimetres, said so, gives the same fit input
    np.save(tmp_path / "cloud_mm.npy", scan.points.numpy() * 1000)
    fit_files([tmp_path / "cloud_mm.npy"], run, tmp_path / "out", unit="mm", fit=fit_config("smoke"))
    assert (tmp_path / "out" / "cloud_mm" / "mesh.obj").exists()


def test_bad_clouds_are_refused_by_name(trained, tmp_path):
    run, t = trained
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="empty.npy is empty"):
        fit_files([tmp_path / "empty.npy"], run, tmp_path / "o")
    a = np.random.default_rng(0).normal(size=(500, 3)) * 0.1; a[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(ValueError, match="nan.npy holds 1 point"):
        fit_files([tmp_path / "nan.npy"], run, tmp_path / "o")
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(500, 3)) * 100.0)   # a head in mm, said m
    with pytest.raises(ValueError, match="looks like mm"): fit_files([tmp_path / "big.npy"], run, tmp_path / "o")
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).normal(size=(500, 3)) * 0.001)
    with pytest.raises(ValueError, match="wrong unit"): fit_files([tmp_path / "tiny.npy"], run, tmp_path / "o")
    with pytest.raises(ValueError, match="unit must be"): check_points(np.zeros((3, 3)), unit="inch")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())   # nothing half-written


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    from headbook.train.loop import save_checkpoint
    save_checkpoint(tmp_path / "sheap.pt", step=1, model=torch.nn.Linear(2, 2),
                    extra={"config": {"model": {"encoder": "cnn"}, "steps": 3}})
    np.save(tmp_path / "c.npy", np.random.default_rng(0).normal(size=(100, 3)) * 0.05)
    with pytest.raises(ValueError, match="not an NPHM checkpoint"):
        fit_files([tmp_path / "c.npy"], tmp_path / "sheap.pt", tmp_path / "o")


def test_fit_pointcloud_command_line(trained, tmp_path, capsys):
    from headbook.cli import main
    run, t = trained
    data = NPHMData(t.config.data)
    scan = depth_scan(from_nphm(data.mesh(1, 0, split="test")), data.faces, image_size=48)
    np.save(tmp_path / "head.npy", scan.points.numpy())
    assert main(["fit-pointcloud", str(tmp_path / "head.npy"), "--model", str(run), "--out", str(tmp_path / "o"),
                 "--preset", "smoke"]) == 0
    assert (tmp_path / "o" / "head" / "mesh.obj").exists() and "head.npy" in capsys.readouterr().out
    assert main(["fit-pointcloud", str(tmp_path / "head.npy"), "--model", str(run), "--out", str(tmp_path / "o2"),
                 "--unit", "mm", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "fit-pointcloud: error" in err and "looks like m" in err and not (tmp_path / "o2").exists()
