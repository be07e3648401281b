"""Property-based tests: random bad configuration values and random bad loss inputs must each
fail with an error that names the offending key, never train silently (issue 7)."""

import copy
from pathlib import Path

import pytest
import torch
from helpers import make_batch, make_loss, make_loss_v2
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import open_dict

from sac_tr.config import ConfigError, cfg_get, validate_config

ROOT = Path(__file__).resolve().parents[1]
with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
    BASE = compose(config_name="sac_mujoco", overrides=["env=pendulum"])

POSITIVE_INTS = [
    "total_frames",
    "frames_per_batch",
    "batch_size",
    "buffer.size",
    "eval.every_frames",
    "eval.episodes",
    "eval.max_steps",
    "checkpoint.every_frames",
    "checkpoint.keep",
    "log_every_updates",
    "collector.num_envs",
    "loss.num_qvalue_nets",
    "target_update.hard_update_every",
]
POSITIVE_FLOATS = ["utd_ratio", "optim.lr_actor", "optim.lr_qvalue", "optim.lr_value"]
POSITIVE_FLOATS += ["optim.lr_alpha", "loss.reward_scale", "loss.alpha"]
BOOLS = [
    "compile",
    "cudagraphs",
    "nan_guard",
    "checkpoint.save_buffer",
    "collector.parallel",
    "progress",
]
CHOICES = ["target_update.kind", "buffer.storage", "logger.backend", "network.activation"]

not_a_positive_int = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
not_a_positive_number = st.one_of(
    st.integers(max_value=0),
    st.floats(max_value=0.0),
    st.just(float("nan")),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
not_a_bool = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none())
bad_choice = st.text(min_size=1, max_size=8).filter(
    lambda t: (
        t not in {"soft", "hard", "memory", "disk", "wandb", "csv", "none", "relu", "tanh", "elu"}
    )
)


def with_value(key: str, value):
    cfg = copy.deepcopy(BASE)
    *parents, leaf = key.split(".")
    node = cfg_get(cfg, ".".join(parents)) if parents else cfg
    with open_dict(node):
        node[leaf] = value
    return cfg


def assert_rejected(key: str, value) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(with_value(key, value))
    assert f"{key}=" in str(err.value), str(err.value)


FAST = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_base_config_is_valid():
    validate_config(BASE)  # else every rejection below would prove nothing


@FAST
@given(key=st.sampled_from(POSITIVE_INTS), value=not_a_positive_int)
def test_bad_integers_are_rejected_by_name(key, value):
    assert_rejected(key, value)


@FAST
@given(key=st.sampled_from(POSITIVE_FLOATS), value=not_a_positive_number)
def test_bad_numbers_are_rejected_by_name(key, value):
    assert_rejected(key, value)


@FAST
@given(key=st.sampled_from(BOOLS), value=not_a_bool)
def test_bad_flags_are_rejected_by_name(key, value):
    assert_rejected(key, value)


@FAST
@given(key=st.sampled_from(CHOICES), value=bad_choice)
def test_unknown_choices_are_rejected_by_name(key, value):
    assert_rejected(key, value)


@FAST
@given(value=st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.text(max_size=3)))
def test_bad_discounts_are_rejected(value):
    assert_rejected("loss.gamma", value)


# ----------------------------------------------------------------------------- loss inputs
LOSSES = {"sac_v1": make_loss, "sac_v2": make_loss_v2}
FLOAT_KEYS = ["observation", "action", ("next", "observation"), ("next", "reward")]
ALL_KEYS = [*FLOAT_KEYS, ("next", "terminated")]


@FAST
@given(
    loss_name=st.sampled_from(sorted(LOSSES)),
    key=st.sampled_from(FLOAT_KEYS),
    bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    row=st.integers(0, 5),
)
def test_nonfinite_inputs_fail_naming_the_key(loss_name, key, bad, row):
    td = make_batch(6)
    value = td.get(key).clone()
    value[row, 0] = bad
    td.set(key, value)
    with pytest.raises(ValueError, match="NaN or inf") as err:
        LOSSES[loss_name]()(td)
    assert repr(key) in str(err.value)


@FAST
@given(loss_name=st.sampled_from(sorted(LOSSES)), key=st.sampled_from(ALL_KEYS))
def test_missing_keys_fail_naming_the_key(loss_name, key):
    td = make_batch(6).exclude(key)
    with pytest.raises(KeyError) as err:
        LOSSES[loss_name]()(td)
    assert repr(key) in str(err.value)


@FAST
@given(
    loss_name=st.sampled_from(sorted(LOSSES)),
    key=st.sampled_from(ALL_KEYS),
    features=st.integers(1, 6),
    squeeze=st.booleans(),
)
def test_wrong_shapes_fail_naming_the_key(loss_name, key, features, squeeze):
    td = make_batch(6)
    old = td.get(key)
    new_shape = (6,) if squeeze else (6, features)
    if new_shape == tuple(old.shape):
        new_shape = (6, old.shape[-1] + 1)
    td.set(key, torch.zeros(new_shape, dtype=old.dtype), inplace=False)
    with pytest.raises(ValueError) as err:
        LOSSES[loss_name]()(td)
    assert repr(key) in str(err.value) and "shape" in str(err.value)
