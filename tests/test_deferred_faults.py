"""NaN/inf checks deferred to the device (the CUDA path, run here on the CPU): the update reads
nothing on the host, a bad batch moves no parameter, Adam moment, step count or target, and a
good batch gives the plain update bit for bit."""

import pytest
import torch
from helpers import DEVICES
from test_agent import _batch, _cfg
from torch.overrides import TorchFunctionMode

from sac_tr.agent import make_agent, update
from sac_tr.envs import make_env

LOSSES = ["sac_v1", "sac_v2", "td3"]


def _agent(loss, deferred, device="cpu"):
    torch.manual_seed(0)
    agent = make_agent(make_env("Pendulum-v1"), _cfg(f"loss={loss}"), torch.device(device))
    assert agent.defer_fault_checks == (device == "cuda")  # the default: deferred on CUDA only
    agent.defer_fault_checks = deferred
    return agent


def _state(agent):
    """Every tensor that learns: the loss's parameters and targets, Adam's moments and steps."""
    tensors = {f"loss.{k}": v.clone() for k, v in agent.loss.state_dict().items()}
    for i, group in enumerate(agent.optimizer.param_groups):
        for j, p in enumerate(group["params"]):
            for name, value in agent.optimizer.state.get(p, {}).items():
                tensors[f"adam.{i}.{j}.{name}"] = value.clone()
    return tensors


def _assert_same(got, want):
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, different


def _bad(batch):
    """A finite but huge reward: the Q regression squares it to inf (the inputs check passes)."""
    bad = batch.clone()
    bad["next", "reward"][0] = 3e38
    return bad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", LOSSES)
def test_a_bad_batch_moves_no_parameter_moment_step_count_or_target(loss, device):
    env = make_env("Pendulum-v1")
    agent = _agent(loss, deferred=True, device=device)
    step = agent.policy_delay - 1  # TD3: a step that moves the actor and the targets too
    update(agent, _batch(env).to(device), step=step)  # Adam's moments and step counts exist
    before = _state(agent)
    assert any(k.endswith(".exp_avg") for k in before) and any("target" in k for k in before)
    out = update(agent, _bad(_batch(env)).to(device), step=step)
    assert not torch.isfinite(out["loss_qvalue"])
    _assert_same(_state(agent), before)
    assert agent.read_faults() == (1, {"loss_qvalue": 1})
    assert agent.read_faults() == (0, {})  # read once
    update(agent, _batch(env, 16).to(device), step=step)  # the next good batch moves all again
    after = _state(agent)
    assert all(not torch.equal(after[k], before[k]) for k in before if ".exp_avg" in k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", LOSSES)
def test_a_good_batch_gives_the_plain_update_bit_for_bit(loss, device):
    env = make_env("Pendulum-v1")
    plain = _agent(loss, deferred=False, device=device)
    deferred = _agent(loss, deferred=True, device=device)
    _assert_same(_state(deferred), _state(plain))
    for step in range(3):
        batch = _batch(env, 16 + step).to(device)
        for agent in (plain, deferred):
            torch.manual_seed(step)
            update(agent, batch.clone(), step=step)
    _assert_same(_state(deferred), _state(plain))
    assert deferred.read_faults() == (0, {})


class _NoHostReads(TorchFunctionMode):
    """Raises on any read of a tensor's value by the host."""

    READS = (
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.nonzero,
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"host read: {func.__name__}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("loss", LOSSES)
def test_the_deferred_update_reads_no_value_on_the_host(loss):
    env = make_env("Pendulum-v1")
    agent = _agent(loss, deferred=True)
    update(agent, _batch(env), step=0)  # the first batch: checked in full, Adam's state built
    agent.skip_input_checks()  # as TrainingRun does once store() screens every transition
    for step in range(1, 3):
        for batch in (_batch(env), _bad(_batch(env))):
            with _NoHostReads():
                update(agent, batch, step=step)
    assert agent.read_faults() == (2, {"loss_qvalue": 2})


@pytest.mark.parametrize("device", [p for p in DEVICES if p.id == "cuda"])
@pytest.mark.parametrize("loss", LOSSES)
def test_a_cuda_update_makes_no_synchronizing_call(loss, device):
    """On CUDA the update (after the first, fully checked batch) never waits for the GPU."""
    env = make_env("Pendulum-v1")
    agent = _agent(loss, deferred=True, device=device)
    update(agent, _batch(env).to(device), step=0)
    agent.skip_input_checks()
    batches = [b.to(device) for b in (_batch(env), _bad(_batch(env)))]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, batch in enumerate(batches, start=1):
            update(agent, batch, step=step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert agent.read_faults() == (1, {"loss_qvalue": 1})
