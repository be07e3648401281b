"""The collector acts with the live policy: an optimizer step is seen by the very next frame."""

import pytest
import torch
from helpers import DEVICES

from sac_tr import make_actor
from sac_tr.data import make_collector
from sac_tr.env_state import (
    EnvUnreachableError,
    capture_collector_state,
    restore_collector_state,
)
from sac_tr.envs import make_env


@pytest.mark.parametrize("device", DEVICES)
def test_collector_uses_the_current_policy_weights_without_synchronisation(device):
    torch.manual_seed(0)
    actor = make_actor(make_env("Pendulum-v1").action_spec, 3, hidden_sizes=(16,)).to(device)
    collector = make_collector(
        lambda: make_env("Pendulum-v1", seed=0),
        actor,
        frames_per_batch=4,
        total_frames=8,
        init_random_frames=0,
        device=device,  # the policy acts there; the environment steps on the CPU
    )
    batches = iter(collector)
    first = next(batches)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(1.0)  # what an optimizer step does, in place
    second = next(batches)
    collector.shutdown()
    mean_net = actor.module[0]
    # The second batch's Gaussian means are those of the updated network, not the old one.
    torch.testing.assert_close(second["loc"], mean_net(second.select("observation").clone())["loc"])
    assert not torch.allclose(mean_net(first.select("observation").clone())["loc"], first["loc"])


class ConstantAction(torch.nn.Module):
    """Acts a = c for every observation: what the worker acts with shows which c it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.zeros(1))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.c.expand(*observation.shape[:-1], 1)


def test_asynchronous_collector_acts_with_the_learners_current_weights():
    from tensordict.nn import TensorDictModule

    policy = TensorDictModule(ConstantAction(), in_keys=["observation"], out_keys=["action"])
    threads = torch.get_num_threads()
    collector = make_collector(
        lambda: make_env("Pendulum-v1", seed=0),
        policy,
        frames_per_batch=5,
        total_frames=20,
        init_random_frames=0,
        asynchronous=True,
    )
    try:
        batches = iter(collector)
        first = next(batches)  # collected before any update: a = 0
        with torch.no_grad():
            policy.module.c.fill_(0.5)  # the learner's update, in place
        next(batches)  # possibly collected, in the worker, before the update
        third = next(batches)  # collected after it
        assert torch.equal(first["action"], torch.zeros(5, 1))
        assert torch.equal(third["action"], torch.full((5, 1), 0.5))
        assert torch.get_num_threads() == threads  # the learner keeps its threads
        with pytest.raises(EnvUnreachableError, match="worker process"):  # checkpoints skip it
            capture_collector_state(collector)
        with pytest.raises(EnvUnreachableError, match="worker process"):  # new episodes on resume
            restore_collector_state(collector, {"carrier": {}, "envs": []})
    finally:
        collector.shutdown()
