"""Each loss variant through the recipe; gradients reach only their own networks; invalid
combinations fail at start; user classes plug in by path; the plot recipe's numbers (issue 5)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from sac_tr.agent import make_agent
from sac_tr.analysis import (
    area_under_curve,
    find_runs,
    group_runs,
    iqm,
    stratified_bootstrap_ci,
    summary_table,
)
from sac_tr.checkpoint import load_checkpoint
from sac_tr.config import ConfigError
from sac_tr.envs import make_env
from sac_tr.train import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "env=pendulum",
    "env.init_random_frames=100",
    "batch_size=32",
    "network.hidden_sizes=[32,32]",
    "eval.every_frames=1000",
    "eval.episodes=1",
    "eval.max_steps=20",
    "eval.video_every=0",
    "checkpoint.every_frames=1000",
    "progress=false",
    "threads=1",
    "logger=none",
]
VARIANTS = ["sac_v1", "sac_v2", "sac_deterministic", "td3", "ddpg"]


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="sac_mujoco", overrides=[*SMALL, *overrides])


def network_params(loss) -> dict[str, list[torch.Tensor]]:
    """The trainable parameters of each network of a loss, by the loss's attribute name."""
    groups = {}
    for name in ("actor_network_params", "qvalue_network_params", "value_network_params"):
        params = getattr(loss, name, None)
        if params is not None:
            trainable = [p for p in params.values(True, True) if p.requires_grad]
            groups[name.removesuffix("_network_params")] = trainable
    if isinstance(getattr(loss, "log_alpha", None), torch.nn.Parameter):
        groups["alpha"] = [loss.log_alpha]
    return groups


@pytest.mark.parametrize("loss", VARIANTS)
def test_every_variant_trains_through_the_recipe(tmp_path, loss):
    # 99 random frames, no update yet (they start at frame 100): the initial networks.
    common = (f"loss={loss}", "logger=csv", "log_every_updates=100")
    start = load_checkpoint(train(make_cfg(*common, "total_frames=99"), tmp_path).checkpoint)
    assert start["updates"] == 0
    summary = train(make_cfg(*common, "total_frames=300", f"resume={tmp_path}"), "/unused")
    assert (summary.frames, summary.updates) == (300, 201)
    logged = tmp_path / "csv" / "sac_pendulum_seed0" / "scalars" / "train"
    rows = (logged / "loss_actor.csv").read_text().splitlines()
    # the windows ending at updates 100 and 200, then the last partial one at the end of the run
    assert [r.split(",")[0] for r in rows] == ["199", "299", "300"]
    state, start = load_checkpoint(summary.checkpoint)["loss"], start["loss"]
    moved = {
        group: any(not torch.equal(state[k], start[k]) for k in start if k.startswith(group))
        for group in ("actor_network_params", "qvalue_network_params", "value_network_params")
        if any(k.startswith(group) for k in start)
    }
    assert moved and all(moved.values()), moved  # every network took gradient steps
    targets = [k for k in start if k.startswith("target_")]
    assert targets and any(not torch.equal(state[k], start[k]) for k in targets)


# Which network each loss term may reach (TD3/DDPG: TorchRL's losses; DDPG's critic is its
# "value" network).
REACHES = {
    "sac_v1": {"loss_actor": "actor", "loss_qvalue": "qvalue", "loss_value": "value"},
    "sac_v2": {"loss_actor": "actor", "loss_qvalue": "qvalue", "loss_alpha": "alpha"},
    "sac_deterministic": {"loss_actor": "actor", "loss_qvalue": "qvalue", "loss_value": "value"},
    "td3": {"loss_actor": "actor", "loss_qvalue": "qvalue"},
    "ddpg": {"loss_actor": "actor", "loss_value": "value"},
}


@pytest.mark.parametrize("loss_name", VARIANTS)
def test_each_loss_term_reaches_only_its_own_network(loss_name):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", seed=0)
    agent = make_agent(env, make_cfg(f"loss={loss_name}"), "cpu")
    with torch.no_grad():  # replayed data carries no graph, as the collector's
        batch = env.rollout(40, agent.policy)  # real transitions, stochastic or noisy actions
    out = agent.loss(batch)
    groups = network_params(agent.loss)
    assert {k for k in out.keys() if k.startswith("loss_")} == set(REACHES[loss_name])
    for term, owner in REACHES[loss_name].items():
        for group, params in groups.items():
            grads = torch.autograd.grad(out[term], params, retain_graph=True, allow_unused=True)
            reached = any(g is not None and g.abs().sum() > 0 for g in grads)
            assert reached == (group == owner), (term, group)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("loss=sac_v1", "actor=deterministic"),
            "actor=deterministic cannot be used with loss=sac_v1: its entropy term needs log pi",
        ),
        (
            ("loss=td3", "actor=tanh_normal"),
            "actor=tanh_normal cannot be used with loss=td3: it trains a deterministic policy",
        ),
        (("loss=ddpg", "eval.stochastic=true"), "a deterministic actor has no stochastic policy"),
        (("loss.target=no_such_module.Loss",), "loss.target='no_such_module.Loss': Cannot import"),
        (("actor.name=gaussian",), "actor.name='gaussian': must be one of"),
        (("loss=td3", "loss.policy_delay=0"), "loss.policy_delay=0: must be a positive integer"),
    ],
)
def test_invalid_combinations_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides, "total_frames=300"), tmp_path)
    assert not (tmp_path / "eval.csv").exists()


def test_a_users_loss_and_actor_plug_in_by_import_path(tmp_path):
    cfg = make_cfg(
        "loss.target=custom_parts.DoubledActorLoss",
        "actor.target=custom_parts.make_narrow_actor",
        "+actor.kwargs.width=12",
        "total_frames=200",
    )
    agent = make_agent(make_env("Pendulum-v1", seed=0), cfg, "cpu")
    assert type(agent.loss).__name__ == "DoubledActorLoss"
    first = agent.loss.actor_network_params["module", "0", "module", "0", "0", "weight"]
    assert first.shape == (12, 3)  # the user's width, from actor.kwargs
    summary = train(cfg, tmp_path)
    assert summary.updates == 101


def test_stochastic_evaluation_adds_its_columns(tmp_path):
    train(make_cfg("eval.stochastic=true", "total_frames=200", "eval.every_frames=100"), tmp_path)
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert rows[0].endswith("stochastic_return_mean,stochastic_return_std")
    det = [float(r.split(",")[2]) for r in rows[1:]]
    sto = [float(r.split(",")[6]) for r in rows[1:]]
    assert len(det) == 2 and det != sto  # sampled actions give other returns


# ----------------------------------------------------------------------------- plots and tables
def write_run(root: Path, name: str, env: str, seed: int, overrides: list[str], returns):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"env": {"id": env}, "seed": seed}))
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([*overrides, f"seed={seed}", "total_frames=300"])
    )
    lines = ["frames,updates,return_mean,return_std,episodes,wall_time_s"]
    lines += [f"{100 * (i + 1)},0,{r},0,1,0" for i, r in enumerate(returns)]
    (run / "eval.csv").write_text("\n".join(lines) + "\n")


def test_plot_recipe_writes_png_and_the_right_numbers(tmp_path):
    spec = importlib.util.spec_from_file_location("plot", ROOT / "recipes" / "plot.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    sweep = tmp_path / "sweep"
    # loss=sac_v1: four seeds with final returns 1, 2, 3, 10 and straight-line curves.
    for seed, final in enumerate([1.0, 2.0, 3.0, 10.0]):
        write_run(sweep, f"a{seed}", "Pendulum-v1", seed, ["loss=sac_v1"], [0, final / 2, final])
    # loss=td3: two seeds, identical curves.
    for seed in range(2):
        write_run(sweep, f"b{seed}", "Pendulum-v1", seed, ["loss=td3"], [5.0, 5.0, 7.0])
    assert plot.main([str(sweep), "--out", str(tmp_path / "out"), "--reps", "500"]) == 0
    png = (tmp_path / "out" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    rows = {r["variant"]: r for r in _read_csv(tmp_path / "out" / "summary.csv")}
    a, b = rows["loss=sac_v1"], rows["loss=td3"]
    # IQM of [1, 2, 3, 10]: drop one from each end -> (2 + 3) / 2; the mean is 16 / 4.
    assert float(a["final_iqm"]) == pytest.approx(2.5) and float(a["final_mean"]) == 4.0
    # AUC of a straight line from 0 to f over frames 100..300, per frame: f / 2; IQM over
    # f = 1, 2, 3, 10 -> (1 + 1.5) / 2.
    assert float(a["auc_iqm"]) == pytest.approx(1.25)
    assert float(a["final_ci_low"]) <= 2.5 <= float(a["final_ci_high"])
    assert 1.0 <= float(a["final_ci_low"]) and float(a["final_ci_high"]) <= 10.0
    # Identical runs: the interval collapses; AUC = (5 + 5) / 2 / 2 + (5 + 7) / 2 / 2 = 5.5.
    assert float(b["final_ci_low"]) == float(b["final_ci_high"]) == 7.0
    assert float(b["auc_iqm"]) == pytest.approx(5.5)
    assert (
        "| Pendulum-v1 | loss=sac_v1 | 4 (0 1 2 3) | 300 | 2.5 ["
        in (tmp_path / "out" / "summary.md").read_text()
    )


def test_iqm_auc_and_stratified_bootstrap_by_hand():
    assert iqm(np.array([7.0, 1.0, 100.0, 3.0, 5.0, -50.0, 4.0, 6.0])) == pytest.approx(4.5)
    assert area_under_curve(np.array([0, 10, 30]), np.array([0.0, 10.0, 10.0])) == pytest.approx(
        (10 * 5 + 20 * 10) / 30
    )
    # Strata are resampled separately: a stratum of identical values stays at its value, so
    # the pooled IQM interval of {a: [1, 1], b: [3, 3]} is exactly [2, 2].
    assert stratified_bootstrap_ci({"a": [1, 1], "b": [3, 3]}, reps=200) == (2.0, 2.0, 2.0)
    est, low, high = stratified_bootstrap_ci({"a": [0, 1, 2, 3, 4, 5, 6, 7]}, statistic=np.mean)
    assert est == 3.5 and 1.5 < low < 3.5 < high < 5.5  # a bootstrap of the mean: +- ~2 s.e.


def _read_csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_how_a_run_resumed_or_how_many_threads_it_had_is_not_a_variant(tmp_path):
    # Two seeds of loss=td3, one continued by resume=PATH with threads=1 to a larger budget.
    write_run(tmp_path, "a", "Pendulum-v1", 0, ["loss=td3"], [1.0])
    b = ["loss=td3", "resume=runs/x", "threads=1", "total_frames=600"]
    write_run(tmp_path, "b", "Pendulum-v1", 1, b, [2.0])
    write_run(tmp_path, "c", "Pendulum-v1", 0, ["loss=sac_v1", "threads=auto"], [3.0])
    grouped = group_runs(find_runs([tmp_path]))["Pendulum-v1"]
    assert {variant: sorted(r.seed for r in runs) for variant, runs in grouped.items()} == {
        "loss=td3": [0, 1],
        "loss=sac_v1": [0],
    }


def test_a_single_variant_is_named_by_its_overrides_and_gets_no_normalised_row(tmp_path):
    # A suite with only sac_v1 runs so far: one run on each of two tasks.
    for env, final in [("Hopper-v5", 3.0), ("Walker2d-v5", 7.0)]:
        write_run(
            tmp_path, env, env, 0, ["+experiment=suite", f"env={env}", "loss=sac_v1"], [final]
        )
    grouped = group_runs(find_runs([tmp_path]))
    assert {env: list(v) for env, v in grouped.items()} == {
        "Hopper-v5": ["experiment=suite loss=sac_v1"],
        "Walker2d-v5": ["experiment=suite loss=sac_v1"],
    }
    # Min-max normalising the only variant by its own single run would give 0 everywhere.
    rows = summary_table(grouped, reps=50)
    assert [r["env"] for r in rows] == ["Hopper-v5", "Walker2d-v5"]


def test_the_normalised_row_with_two_variants_by_hand(tmp_path):
    # Hopper: sac_v1 ends at 1 and 3, td3 at 5; Walker2d: sac_v1 at 10, td3 at 20 and 30.
    runs = [("Hopper-v5", "loss=sac_v1", 0, 1.0), ("Hopper-v5", "loss=sac_v1", 1, 3.0)]
    runs += [("Hopper-v5", "loss=td3", 0, 5.0), ("Walker2d-v5", "loss=sac_v1", 0, 10.0)]
    runs += [("Walker2d-v5", "loss=td3", 0, 20.0), ("Walker2d-v5", "loss=td3", 1, 30.0)]
    for i, (env, loss, seed, final) in enumerate(runs):
        write_run(tmp_path, f"r{i}", env, seed, [loss], [final])
    rows = summary_table(group_runs(find_runs([tmp_path])), reps=200)
    normalised = {r["variant"]: r for r in rows if r["env"] == "all (min-max normalised)"}
    assert sorted(normalised) == ["loss=sac_v1", "loss=td3"]
    # Hopper spans 1..5: sac_v1 -> 0, 0.5; td3 -> 1. Walker2d spans 10..30: sac_v1 -> 0; td3 -> 0.5, 1.
    # The IQM of 3 values keeps all 3 (floor(3/4) = 0 dropped): sac_v1 (0 + 0.5 + 0) / 3, td3 2.5 / 3.
    assert normalised["loss=sac_v1"]["final_iqm"] == pytest.approx(0.5 / 3)
    assert normalised["loss=td3"]["final_iqm"] == pytest.approx(2.5 / 3)
    assert normalised["loss=td3"]["runs"] == 3
    # summary.md: the normalised row has no seeds to list.
    spec = importlib.util.spec_from_file_location("plot", ROOT / "recipes" / "plot.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    table = plot.write_tables(rows, tmp_path)
    assert "| all (min-max normalised) | loss=td3 | 3 |  | 0.8 [" in table
    assert "| Hopper-v5 | loss=sac_v1 | 2 (0 1) | 100 |" in table


def test_the_figure_draws_each_seed_to_where_it_got(tmp_path):
    spec = importlib.util.spec_from_file_location("plot", ROOT / "recipes" / "plot.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    # loss=sac_v1: seed 0 evaluated 5 times (to 500 frames), seed 1 only 3 times; td3: one seed.
    write_run(tmp_path, "a0", "Hopper-v5", 0, ["loss=sac_v1"], [1.0, 2.0, 3.0, 4.0, 5.0])
    write_run(tmp_path, "a1", "Hopper-v5", 1, ["loss=sac_v1"], [3.0, 4.0, 5.0])
    write_run(tmp_path, "b0", "Hopper-v5", 0, ["loss=td3"], [7.0, 8.0])
    fig = plot.figure(group_runs(find_runs([tmp_path])), None)
    lines = {
        (line.get_label(), tuple(line.get_xdata()), tuple(line.get_ydata()))
        for line in fig.axes[0].get_lines()
    }
    assert lines == {
        ("loss=sac_v1 (n=2)", (100, 200, 300), (2.0, 3.0, 4.0)),  # the mean where both are
        ("_seed 0", (100, 200, 300, 400, 500), (1.0, 2.0, 3.0, 4.0, 5.0)),  # seed 0 to 500
        ("_seed 1", (100, 200, 300), (3.0, 4.0, 5.0)),  # seed 1 to 300
        ("loss=td3 (n=1)", (100, 200), (7.0, 8.0)),  # one seed: its curve is the mean
    }


def test_a_run_is_counted_once(tmp_path):
    write_run(tmp_path / "results", "a0", "Hopper-v5", 0, ["loss=sac_v1"], [1.0, 2.0])
    write_run(tmp_path / "results", "a1", "Hopper-v5", 1, ["loss=sac_v1"], [3.0, 4.0])
    # The same root twice, or a root and a folder inside it: each run once.
    for roots in ([tmp_path / "results"] * 2, [tmp_path, tmp_path / "results"]):
        grouped = group_runs(find_runs(roots))
        assert sorted(r.seed for r in grouped["Hopper-v5"]["loss=sac_v1"]) == [0, 1]
    # A copy of a run elsewhere (committed results beside the campaign's) is refused, not pooled.
    write_run(tmp_path / "campaign", "a0", "Hopper-v5", 0, ["loss=sac_v1"], [1.0, 2.0, 5.0])
    with pytest.raises(ValueError, match="are the same run"):
        group_runs(find_runs([tmp_path / "results", tmp_path / "campaign"]))
