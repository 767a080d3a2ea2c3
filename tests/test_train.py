"Shared training infrastructure: configs, metrics, checkpoint/resume, deterministic batches, torchrun/DDP (gloo)."
import dataclasses, json, re, textwrap
from pathlib import Path
import pytest
import torch
from torch import nn
from headbook.train.config import make_config, apply_overrides, parse_overrides, config_to_dict, config_from_dict
from headbook.train.loop import (train, read_metrics, global_batch_indices, shard, DistInfo, save_checkpoint,
                                 load_checkpoint, latest_checkpoint, seed_everything, new_run_dir, MetricsLog,
                                 check_resume_exact, check_ddp_matches_single, ProgressLog, PROGRESS_LOG)


@dataclasses.dataclass
class Opt:
    lr: float = 1e-3  # learning rate


@dataclasses.dataclass
class Cfg:
    steps: int = 10   # steps
    name: str = "x"   # name
    flag: bool = False
    sizes: tuple = (1, 2)
    opt: Opt = dataclasses.field(default_factory=Opt)


PRESETS = {"smoke": Cfg(steps=2), "paper": Cfg(steps=1000)}


def test_overrides_apply_and_fail_clearly():
    c = make_config(PRESETS, "smoke", {"steps": "5", "opt.lr": 0.1, "sizes": [3, 4], "flag": "true"})
    assert (c.steps, c.opt.lr, c.sizes, c.flag) == (5, 0.1, (3, 4), True)
    assert make_config(PRESETS, "smoke", '{"opt": {"lr": 0.5}}').opt.lr == 0.5
    assert PRESETS["smoke"].steps == 2                       # presets are not mutated
    with pytest.raises(KeyError, match="no field 'stpes'"): make_config(PRESETS, "smoke", {"stpes": 1})
    with pytest.raises(KeyError, match="unknown preset"): make_config(PRESETS, "huge")
    with pytest.raises(TypeError, match="expected an int"): make_config(PRESETS, "smoke", {"steps": 2.5})
    with pytest.raises(TypeError, match="expected a string"): make_config(PRESETS, "smoke", {"name": 3})
    with pytest.raises(ValueError, match="JSON"): parse_overrides("{steps: 1}")
    assert parse_overrides("") == {} and parse_overrides(None) == {}
    assert config_from_dict(Cfg, json.loads(json.dumps(config_to_dict(c)))) == c


def test_global_batches_are_deterministic_permutations_and_shard_evenly():
    n, B = 13, 4
    seen = torch.cat([global_batch_indices(s, B, n, seed=3) for s in range(13)])   # 52 = 4 epochs
    for e in range(4): assert sorted(seen[e * n:(e + 1) * n].tolist()) == list(range(n))
    assert torch.equal(global_batch_indices(5, B, n, 3), global_batch_indices(5, B, n, 3))
    assert not torch.equal(global_batch_indices(0, B, n, 3), global_batch_indices(0, B, n, 4))
    idx = global_batch_indices(0, 6, n)
    parts = [shard(idx, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert torch.equal(torch.cat(parts), idx) and all(len(p) == 2 for p in parts)
    with pytest.raises(ValueError, match="divide"): shard(idx, DistInfo(rank=0, world_size=4))
    with pytest.raises(ValueError, match="positive"): global_batch_indices(0, 2, 0)


def _toy(run_dir, steps=8, stop_after=None, ckpt_every=3):
    seed_everything(0)
    X = torch.randn(40, 4); y = X.sum(1, keepdim=True)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))   # dropout: RNG inside the step
    opt = torch.optim.AdamW(net.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    def step_fn(step):
        i = global_batch_indices(step, 8, 40, seed=1)
        return {"loss": ((net(X[i]) - y[i]) ** 2).mean(), "aux": torch.tensor(float(step))}
    return train(step_fn, net, opt, steps, run_dir, scheduler=sched, ckpt_every=ckpt_every, stop_after=stop_after, progress=False), net


def test_resume_reproduces_the_uninterrupted_losses(tmp_path):
    # the shared kill-and-resume check (every trainer's test uses it): checkpoints at 3, 6; killed after 5
    r = check_resume_exact(lambda d, stop: _toy(d, stop_after=stop)[0], tmp_path, stop_after=5)
    assert r["rest"].resumed_from == 3 and len(r["cut"].losses) == 5 and len(r["full"].losses) == 8
    rows = read_metrics(tmp_path / "cut")
    assert [r["step"] for r in rows] == list(range(1, 9)) and all("lr" in r and "aux" in r for r in rows)


def test_resume_check_catches_a_trainer_that_does_not_resume_exactly(tmp_path):
    "A trainer whose noise generator is not in the checkpoint resumes with other losses: the helper says so."
    def leaky(run_dir, stop_after):
        seed_everything(0)
        net = nn.Linear(3, 1); opt = torch.optim.SGD(net.parameters(), 0.1)
        g = torch.Generator().manual_seed(1)                        # not saved in the checkpoint: replays from 0
        def step_fn(step):
            x = torch.randn(4, 3, generator=g)
            return {"loss": (net(x) - x.sum(1, keepdim=True)).pow(2).mean()}
        return train(step_fn, net, opt, 6, run_dir, ckpt_every=2, stop_after=stop_after, progress=False)
    with pytest.raises(AssertionError, match="losses after the resume differ"):
        check_resume_exact(leaky, tmp_path, stop_after=3)


def _lambda_toy(run_dir, lr=0.1, steps=6, stop_after=None, allow_changes=False):
    seed_everything(0)
    net = nn.Linear(3, 1); opt = torch.optim.Adam(net.parameters(), lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / (steps + 1))
    x = torch.randn(16, 3)
    step_fn = lambda step: {"loss": (net(x) - 1).pow(2).mean()}
    res = train(step_fn, net, opt, steps, run_dir, scheduler=sched, ckpt_every=2, stop_after=stop_after,
                progress=False, extra={"config": {"lr": lr, "steps": steps}}, allow_changes=allow_changes)
    return res, opt


def test_resume_with_changed_settings_is_refused_then_applied(tmp_path):
    # issue 17: a resume with a new lr rewrote config.json while the optimiser kept the checkpoint's lr
    from headbook.train.loop import ResumeSettingsError
    _lambda_toy(tmp_path, stop_after=2)
    with pytest.raises(ResumeSettingsError, match=r"lr 0.1 -> 0.5; steps 6 -> 8.*allow_changes=True"):
        _lambda_toy(tmp_path, lr=0.5, steps=8)
    assert len(read_metrics(tmp_path)) == 2                                   # nothing ran
    res, opt = _lambda_toy(tmp_path, lr=0.5, steps=8, allow_changes=True)
    assert res.resumed_from == 2 and res.step == 8
    lrs = {r["step"]: r["lr"] for r in read_metrics(tmp_path)}
    assert lrs[1] == pytest.approx(0.1 * (1 - 1 / 7))                        # before: the old settings
    for s in range(3, 9): assert lrs[s] == pytest.approx(0.5 * (1 - s / 9)), s   # after: the new lr and schedule
    assert opt.param_groups[0]["initial_lr"] == 0.5


STEP_LINE = re.compile(r"^\d\d:\d\d:\d\d toy step (\d+)/8  loss (\S+)  aux (\S+)  lr (\S+)  (\S+) s/step  ETA (\S+)$")


def _progress_toy(run_dir, stop_after=None, progress_secs=0.0, info=None, seen=None):
    seed_everything(0)
    X = torch.randn(40, 4); y = X.sum(1, keepdim=True)
    net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), 0.05)
    def step_fn(step):
        if seen is not None: seen.append((Path(run_dir) / PROGRESS_LOG).read_text())   # what is on disk mid-run
        i = global_batch_indices(step, 8, 40, seed=1)
        return {"loss": ((net(X[i]) - y[i]) ** 2).mean(), "aux": torch.tensor(float(step))}
    return train(step_fn, net, opt, 8, run_dir, info=info, ckpt_every=3, stop_after=stop_after, progress=False,
                 desc="toy", progress_secs=progress_secs)


def test_progress_log_has_steps_losses_and_eta_flushed_as_it_goes(tmp_path):
    seen = []
    cut = _progress_toy(tmp_path, stop_after=5, seen=seen)
    # flushed line by line: when step k runs, the line of step k-1 is already in the file
    assert all(f" toy step {k}/8  loss " in seen[k] for k in range(1, 5))
    rest = _progress_toy(tmp_path)
    lines = (tmp_path / PROGRESS_LOG).read_text().splitlines()
    steps = [STEP_LINE.match(l) for l in lines]
    assert [int(m[1]) for m in steps if m] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]   # the killed run's, then the resume's
    losses = [float(m[2]) for m in steps if m]
    assert losses == pytest.approx([*cut.losses, *rest.losses], rel=1e-3)
    assert [float(m[3]) for m in steps if m] == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7]
    assert all(float(m[4]) == 0.05 and float(m[5]) >= 0 for m in steps if m)
    assert [m[6] for m in steps if m][-1] == "0s"
    others = [l[9:] for l, m in zip(lines, steps) if not m]
    assert others == ["toy steps 1-8 of 8 on cpu", "toy checkpoint step_0000003.pt", others[2],
                      "toy steps 4-8 of 8 on cpu, resumed from step 3", "toy checkpoint step_0000006.pt",
                      "toy checkpoint step_0000008.pt", others[6]]
    assert re.fullmatch(r"toy stopped after step 5/8 in \d+s", others[2])
    assert re.fullmatch(r"toy finished step 8/8 in \d+s", others[6])


def test_progress_lines_are_spaced_in_time_and_rank_0_alone_writes(tmp_path):
    _progress_toy(tmp_path / "a", progress_secs=1e9)               # the first and the last step only
    lines = (tmp_path / "a" / PROGRESS_LOG).read_text().splitlines()
    assert [int(m[1]) for m in map(STEP_LINE.match, lines) if m] == [1, 8]
    res = _progress_toy(tmp_path / "b", info=DistInfo(rank=1, world_size=2))
    assert res.step == 8 and not (tmp_path / "b" / PROGRESS_LOG).exists()


def test_progress_speed_and_eta_from_the_clock(tmp_path, monkeypatch):
    import headbook.train.loop as loop
    now = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now[0])
    log = ProgressLog(tmp_path / PROGRESS_LOG, total=1000, start=200, desc="sheap", every_s=10)
    wrote = []
    for step, t in ((201, 102.0), (205, 110.0), (210, 120.0), (211, 121.0), (1000, 1700.0)):
        now[0] = t; wrote.append(log.step(step, {"l1": 0.5, "loss": 1.25}))
    assert wrote == [True, False, True, False, True]    # the first, then 10 s apart, and the last
    lines = [l[9:] for l in (tmp_path / PROGRESS_LOG).read_text().splitlines()]
    assert lines[0] == "sheap step 201/1000  loss 1.25  l1 0.5  2 s/step  ETA 26m38s"        # 799 steps x 2 s
    assert lines[1] == "sheap step 210/1000  loss 1.25  l1 0.5  2 s/step  ETA 26m20s"
    assert lines[2] == "sheap step 1000/1000  loss 1.25  l1 0.5  2 s/step  ETA 0s"
    assert log.elapsed() == "26m40s"


def test_nonfinite_loss_stops_with_the_step(tmp_path):
    net = nn.Linear(2, 1); opt = torch.optim.SGD(net.parameters(), 0.1)
    def step_fn(step):
        l = net(torch.ones(1, 2)).sum() * (float("nan") if step == 2 else 1.0)
        return {"loss": l, "term": l.detach()}
    with pytest.raises(FloatingPointError, match="step 3.*term"):
        train(step_fn, net, opt, 5, tmp_path, progress=False)


def test_checkpoint_roundtrip_and_errors(tmp_path):
    net = nn.Linear(3, 2); opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward(); opt.step()
    p = save_checkpoint(tmp_path / "c.pt", step=7, model=net, optimizer=opt, extra={"k": 1})
    torch.manual_seed(123); expect = torch.rand(3)
    net2 = nn.Linear(3, 2); opt2 = torch.optim.Adam(net2.parameters())
    torch.manual_seed(5)
    blob = load_checkpoint(p, net2, opt2)
    assert blob["step"] == 7 and blob["extra"] == {"k": 1} and torch.equal(net.weight, net2.weight)
    assert opt2.state_dict()["state"][0]["step"] == 1
    with pytest.raises(FileNotFoundError, match="no checkpoint"): load_checkpoint(tmp_path / "nope.pt")
    assert latest_checkpoint(tmp_path) is None
    d = new_run_dir("exp", tmp_path); assert d.parent.name == "exp" and d.is_dir()
    m = MetricsLog(d / "metrics.jsonl", enabled=False); m.log(1, loss=1.0); assert not (d / "metrics.jsonl").exists()


DDP_SCRIPT = textwrap.dedent('''
    import sys, torch
    from torch import nn
    from headbook.train.loop import setup_distributed, wrap_model, train, global_batch_indices, shard, cleanup_distributed, unwrap
    info = setup_distributed("cpu")
    torch.manual_seed(0)
    X = torch.randn(32, 5); y = torch.sin(X @ torch.randn(5, 2))
    net = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 2))
    if info.rank == 1:                                   # different init on rank 1: DDP must broadcast rank 0's
        with torch.no_grad():
            for p in net.parameters(): p.add_(1.0)
    model = wrap_model(net, info)
    opt = torch.optim.Adam(model.parameters(), 5e-2)
    def step_fn(step):
        i = shard(global_batch_indices(step, 8, 32, seed=2), info)
        return {"loss": ((model(X[i]) - y[i]) ** 2).mean()}
    res = train(step_fn, model, opt, 3, sys.argv[1], info=info, ckpt_every=100, progress=False)
    if info.is_main:
        torch.save({"params": [p.detach().clone() for p in unwrap(model).parameters()], "losses": res.losses}, sys.argv[1] + "/final.pt")
    cleanup_distributed()
''')


def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_toy.py"; script.write_text(DDP_SCRIPT)
    one, two = check_ddp_matches_single(script, tmp_path, timeout=180)
    a, b = torch.load(one / "final.pt"), torch.load(two / "final.pt")
    for p, q in zip(a["params"], b["params"]): torch.testing.assert_close(p, q, atol=1e-5, rtol=0)
    assert abs(a["losses"][0] - b["losses"][0]) < 1e-5 and a["losses"][-1] < a["losses"][0]
    assert [r["step"] for r in read_metrics(two)] == [1, 2, 3]          # one metrics file, written by rank 0 only
    log = (two / PROGRESS_LOG).read_text().splitlines()                 # one progress.log, by rank 0 only
    assert "steps 1-3 of 3 on cpu x 2 processes" in log[0] and len(log) == 5, log    # steps 1 and 3 (10 s apart)
    assert [re.search(r" train step (\d)/3 ", l)[1] for l in log[1:3]] == ["1", "3"] and "finished" in log[-1]
