"""Bad input is refused before anything is built: keys the recipe does not know, devices this
machine does not have."""

import itertools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from sac_tr.agent import make_agent
from sac_tr.config import ConfigError, validate_config
from sac_tr.envs import make_env
from sac_tr.schema import config_schema, unknown_keys
from sac_tr.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = (ROOT / "configs", "sac_mujoco")


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="sac_mujoco", overrides=["env=pendulum", *overrides])


@pytest.mark.parametrize(
    "override, message",
    [
        ("+batchsize=512", r"batchsize: not a key of this recipe \(did you mean batch_size\?\)"),
        ("+eval.vidoe_every=2", r"eval.vidoe_every: .*did you mean eval.video_every\?"),
        ("+loss.alpha_int=0.5", r"loss.alpha_int: .*did you mean loss.alpha_init\?"),
        ("+zzz=1", r"zzz: not a key of this recipe \(no such key here\)"),
    ],
)
def test_an_added_key_the_recipe_does_not_know_is_refused_before_building(
    override, message, tmp_path
):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(override, "logger=csv"), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing built, nothing written


def test_every_shipped_choice_and_a_users_kwargs_pass_the_key_check():
    schema = config_schema(*CONFIGS)
    for overrides in (
        (),
        ("loss=sac_v2", "actor=tanh_normal", "target_update=hard", "logger=none"),
        ("loss=td3", "actor=deterministic", "+loss.kwargs.my_arg=3", "+actor.kwargs.width=7"),
        ("+experiment=fig2", "+fig2_variant=deterministic"),
        ("+experiment=fig3c", "+fig3c_target=hard_1000"),
        *[(f"+{p.parent.name}={p.stem}",) for p in sorted(ROOT.glob("configs/experiment/*.yaml"))],
        *[(f"+sweep={p.stem}",) for p in sorted(ROOT.glob("configs/sweep/*.yaml"))],
    ):
        assert unknown_keys(make_cfg(*overrides), schema) == [], overrides


def test_a_key_added_to_a_config_file_is_known_without_code_changes(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "main.yaml").write_text("defaults:\n  - env: a\n  - _self_\nseed: 0\n")
    (tmp_path / "env" / "a.yaml").write_text("id: A\n")
    (tmp_path / "env" / "b.yaml").write_text("id: B\nnew_knob: 1\n")
    schema = config_schema(tmp_path, "main")
    assert schema == {"seed": None, "env": {"id": None, "new_knob": None}}


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_on_a_machine_without_it_is_refused_with_the_fix(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(
        ConfigError, match=f"device={device}: CUDA is not available here; use device=auto or cpu"
    ):
        validate_config(make_cfg(f"device={device}"), CONFIGS)


def test_a_cuda_device_number_beyond_those_present_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"device=cuda:1: this machine has 1 CUDA device.*cuda:0"):
        validate_config(make_cfg("device=cuda:1"), CONFIGS)
    validate_config(make_cfg("device=cuda:0"), CONFIGS)  # the one it has is accepted


@pytest.mark.parametrize("threads", ["auto", "null", "2"])
def test_thread_settings_accepted(threads):
    validate_config(make_cfg(f"threads={threads}"), CONFIGS)


def test_a_bad_thread_setting_names_the_choices():
    with pytest.raises(ConfigError, match=r"threads='many': must be a positive integer, 'auto'"):
        validate_config(make_cfg("threads=many"), CONFIGS)


@pytest.mark.parametrize(
    "overrides, unused",
    [
        (("loss=sac_v2", "+value.kwargs.depth=3"), "value.kwargs unused"),
        (
            ("loss=td3", "value.target=tests.custom_parts.make_residual_value"),
            "value.target unused",
        ),
        (("loss=ddpg", "value.hidden_sizes=[64]"), "value.hidden_sizes unused"),
    ],
)
def test_value_settings_for_a_loss_without_v_are_said_to_be_unused(overrides, unused):
    # V is built only for a loss that takes one: its builder's arguments are not checked (a sweep
    # over losses may set them for all), and the run says they are unused.
    cfg = make_cfg(*overrides)
    validate_config(cfg)
    notes = make_agent(make_env(cfg.env.id, seed=0), cfg, "cpu").notes
    assert [n for n in notes if n.startswith("value:")] == [
        f"value: none built, the loss takes no value network: {unused}"
    ]


def test_a_loss_with_v_still_has_its_value_builder_checked():
    with pytest.raises(ConfigError, match=r"make_value takes no argument 'depth'"):
        validate_config(make_cfg("loss=sac_v1", "+value.kwargs.depth=3"))
    cfg = make_cfg("loss=sac_v2")
    validate_config(cfg)  # the value group's defaults, unused, pass without a word
    assert not [
        n for n in make_agent(make_env(cfg.env.id), cfg, "cpu").notes if n.startswith("value")
    ]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in ROOT.glob("configs/experiment/*")))
def test_each_experiments_runs_get_their_own_directory_named_without_a_job_number(experiment):
    """resume=auto continues the run in a job's directory: named by what the sweep varies, a job
    finds its own run even when the sweep's lists change (with job numbers, another run's). The
    jobs are the product of the sweeper's comma-separated lists, as hydra's basic sweeper makes
    them; each job's ``hydra.sweep.subdir`` is resolved as hydra resolves it for that job."""
    launch = [f"+experiment={experiment}"]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        params = compose("sac_mujoco", overrides=launch, return_hydra_config=True).hydra.sweeper
        lists = [[f"{k}={v}" for v in str(vals).split(",")] for k, vals in params.params.items()]
        names = []
        try:
            for job in itertools.product(*lists):
                cfg = compose("sac_mujoco", overrides=[*launch, *job], return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.choices.<group>}
                names.append(cfg.hydra.sweep.subdir)
        finally:
            HydraConfig.instance().cfg = None  # as outside a hydra app, for the tests after
    assert len(names) > 1
    assert len(set(names)) == len(names), names  # no two jobs share a run directory
    assert not any(name.split("_")[0].isdigit() for name in names), names
