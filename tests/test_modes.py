"""Train and eval modes (issue 12): updates run the networks in train mode; acting (by default),
evaluation and videos in eval mode; a DroQ critic trains through the recipe; batch-norm running
statistics are checkpointed and resume exactly."""

import custom_parts
import torch
from tensordict import TensorDict
from test_variants import make_cfg
from torch import nn

from sac_tr.agent import make_agent
from sac_tr.checkpoint import load_checkpoint
from sac_tr.envs import make_env
from sac_tr.evaluation import evaluate
from sac_tr.train import train

LOG: list[tuple[str, bool, int]] = []  # (network, its training flag, rows) of every forward


class Recorder(nn.Module):
    """An identity layer that notes the mode it runs in and how many rows it sees."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        LOG.append((self.tag, self.training, x.shape[:-1].numel()))
        return x


def recording_actor(action_spec, observation_dim, **kwargs):
    """custom_parts.make_batchnorm_actor with a Recorder in front of its first layer."""
    actor = custom_parts.make_batchnorm_actor(action_spec, observation_dim, **kwargs)
    actor.module[0].module.insert(0, Recorder("actor"))
    return actor


def recording_droq_qvalue(observation_dim, action_dim, **kwargs):
    """custom_parts.make_droq_qvalue with a Recorder in front of its first layer."""
    qvalue = custom_parts.make_droq_qvalue(observation_dim, action_dim, **kwargs)
    qvalue.module.layers.insert(0, Recorder("critic"))
    return qvalue


RECORDING = (
    "actor.target=test_modes.recording_actor",
    "critic.target=test_modes.recording_droq_qvalue",
)


def test_updates_train_and_acting_and_evaluation_eval_through_the_recipe(tmp_path):
    # SAC-v2 with a DroQ critic (Dropout + LayerNorm) and a batch-norm actor: 50 updates on
    # batches of 32 rows; the policy acts on one row per frame and is evaluated on one.
    LOG.clear()
    cfg = make_cfg(
        "loss=sac_v2", *RECORDING, "total_frames=150", "eval.every_frames=150", "utd_ratio=1"
    )
    summary = train(cfg, tmp_path)
    assert summary.updates == 51
    in_updates = [(tag, training) for tag, training, rows in LOG if rows == 32]
    elsewhere = [(tag, training, rows) for tag, training, rows in LOG if rows != 32]
    assert {tag for tag, _ in in_updates} == {"actor", "critic"}
    assert all(training for _, training in in_updates)  # Dropout on, batch statistics
    # The collector's probe of the policy when it is built, acting (frames 101..150) and the 20
    # evaluation steps: the actor alone, one row, eval mode.
    assert elsewhere == [("actor", False, 1)] * (1 + 50 + 20)


def test_acting_in_train_mode_on_request_and_evaluation_still_in_eval_mode():
    env = make_env("Pendulum-v1", seed=0)
    observation = TensorDict(observation=torch.randn(4, 3), batch_size=[4])
    for act_in_train_mode in (False, True):
        agent = make_agent(
            env, make_cfg(*RECORDING, f"collector.act_in_train_mode={act_in_train_mode}"), "cpu"
        )
        LOG.clear()
        agent.policy(observation.clone())  # the collector's call
        evaluate(env, agent.actor, episodes=1, max_steps=3)
        agent.policy(observation.clone())
        assert [training for _, training, _ in LOG] == [act_in_train_mode] + [False] * 3 + [
            act_in_train_mode
        ]  # evaluation in eval mode, then the acting mode again


def test_batchnorm_running_statistics_are_checkpointed_and_resume_exactly(tmp_path):
    every = ("eval.every_frames=150", "checkpoint.every_frames=150")
    actor = "actor.target=custom_parts.make_batchnorm_actor"
    whole = train(make_cfg(actor, *every, "total_frames=300"), tmp_path / "whole")
    half = train(make_cfg(actor, *every, "total_frames=150"), tmp_path / "split")
    split = train(
        make_cfg(actor, *every, "total_frames=300", f"resume={tmp_path / 'split'}"), "/unused"
    )
    a, b = load_checkpoint(whole.checkpoint)["loss"], load_checkpoint(split.checkpoint)["loss"]
    stats = [k for k in a if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(stats) == 6  # two BatchNorm layers
    saved = load_checkpoint(half.checkpoint)["loss"]
    # 51 updates by frame 150, one actor pass each (SAC-v1 samples a~ once); acting and
    # evaluation, in eval mode, leave the statistics alone.
    assert all(int(saved[k]) == 51 for k in stats if k.endswith("num_batches_tracked"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
