"""The collector acts with the live policy: an optimizer step is seen by the very next frame."""

import torch

from sac_tr import make_actor
from sac_tr.data import make_collector
from sac_tr.envs import make_env


def test_collector_uses_the_current_policy_weights_without_synchronisation():
    torch.manual_seed(0)
    actor = make_actor(make_env("Pendulum-v1").action_spec, 3, hidden_sizes=(16,))
    collector = make_collector(
        lambda: make_env("Pendulum-v1", seed=0),
        actor,
        frames_per_batch=4,
        total_frames=8,
        init_random_frames=0,
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
