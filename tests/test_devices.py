"""Where things live on a GPU run (issue 15): environments on the CPU, networks and the acting
policy on the training device, the replay buffer on ``buffer.device``, checkpoints carrying the
CUDA generators. The CUDA cases are skipped, with the reason, on a machine without a GPU."""

import pytest
import torch
from helpers import DEVICES, HIDDEN, OBS_DIM, action_spec, needs_cuda
from omegaconf import OmegaConf
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from test_recipe import make_cfg
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import AdditiveGaussianModule

from sac_tr.agent import make_agent
from sac_tr.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from sac_tr.config import ConfigError, validate_config
from sac_tr.data import buffer_device
from sac_tr.envs import make_env
from sac_tr.modules import make_deterministic_actor, make_gaussian_exploration
from sac_tr.train import TrainingRun


# ----------------------------------------------------------------------------- buffer.device
def test_buffer_device_auto_is_the_training_device_in_memory_and_the_cpu_on_disk():
    def where(storage, device):
        return buffer_device(OmegaConf.create({"storage": storage, "device": device}), "cuda:1")

    assert where("memory", "auto") == torch.device("cuda:1")
    assert where("disk", "auto") == torch.device("cpu")  # memory-mapped files are host memory
    assert where("memory", "cpu") == torch.device("cpu")
    assert buffer_device(OmegaConf.create({"storage": "memory"}), "cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("buffer.device=gpu",), r"buffer\.device='gpu': must be 'auto', 'cpu', 'cuda'"),
        (
            ("buffer.storage=disk", "buffer.device=cuda"),
            r"buffer\.device=cuda with buffer\.storage=disk: a disk buffer is memory-mapped",
        ),
    ],
)
def test_bad_buffer_device_is_named_before_anything_is_built(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg(*overrides))


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_cudagraphs_on_the_cpu_is_refused_naming_the_fix(device):
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("device=auto is a GPU on this machine")
    with pytest.raises(
        ConfigError, match=rf"cudagraphs=true with device={device}: .*cudagraphs=false"
    ):
        validate_config(make_cfg("cudagraphs=true", f"device={device}"))
    validate_config(make_cfg("cudagraphs=false", f"device={device}"))  # the fix it names


def test_cudagraphs_with_a_hard_target_copy_is_refused():
    with pytest.raises(ConfigError, match="cudagraphs=true with target_update=hard"):
        validate_config(make_cfg("cudagraphs=true", "device=cuda", "target_update=hard"))


def test_a_gpu_this_machine_lacks_is_named_before_anything_is_built():
    if torch.cuda.is_available():
        bad, message = f"cuda:{torch.cuda.device_count()}", "CUDA device\\(s\\), cuda:0 to"
    else:
        bad, message = "cuda", "CUDA is not available here; use device=auto or cpu"
    with pytest.raises(ConfigError, match=f"device={bad}: .*{message}"):
        validate_config(make_cfg(f"device={bad}"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("where, loss", [("auto", "sac_v1"), ("cpu", "sac_v1"), ("auto", "td3")])
def test_envs_stay_on_the_cpu_the_policy_acts_on_the_device_batches_go_where_the_buffer_is(
    tmp_path, device, where, loss
):
    # TD3: a deterministic actor behind exploration noise. Every parameter and buffer of the
    # acting policy must be on the device, or TorchRL's collector would act with a copy of it
    # (on the device) that the optimizer never updates.
    cfg = make_cfg(
        f"device={device}",
        f"buffer.device={where}",
        f"loss={loss}",
        "total_frames=300",
        "logger=none",
    )
    run = TrainingRun(cfg, tmp_path)
    stored = device if where == "auto" else "cpu"
    try:
        collector = run.collector
        assert collector.env.device == torch.device("cpu")  # MuJoCo/gym step on the host
        assert collector.policy_device.type == device
        assert collector.storing_device.type == stored
        assert collector.policy is run.agent.policy  # the learner's own, not a copy
        assert {
            t.device.type for t in (*run.agent.policy.parameters(), *run.agent.policy.buffers())
        } == {device}
        batch = next(iter(collector))
        assert batch["observation"].device.type == batch["action"].device.type == stored
        run.store(batch)
        sample = run.buffer.sample()
        assert sample["observation"].device.type == stored
        if stored == "cpu" and device == "cuda":
            assert sample["observation"].is_pinned()  # copied to the GPU without waiting
    finally:
        run.collector.shutdown()


# ----------------------------------------------------------------------------- exploration noise
@pytest.mark.parametrize("device", DEVICES)
def test_exploration_is_torchrls_additive_gaussian_projected_into_the_bounds(device):
    # Reference: TorchRL's AdditiveGaussianModule with the Bounded spec (it projects actions that
    # leave the box). sigma = 2 of the half-range: many noisy actions leave it on both sides.
    spec = action_spec().to(device)
    torch.manual_seed(0)
    actor = make_deterministic_actor(spec, OBS_DIM, hidden_sizes=HIDDEN).to(device)
    ours = make_gaussian_exploration(actor, spec, sigma=2.0)
    half_range = (spec.space.high - spec.space.low).mean().item() / 2
    reference = TensorDictSequential(
        actor,
        AdditiveGaussianModule(
            spec=spec, sigma_init=1.0, sigma_end=1.0, std=2.0 * half_range, device=device
        ),
    )
    observation = torch.randn(500, OBS_DIM, device=device)
    torch.manual_seed(1)
    got = ours(TensorDict(observation=observation, batch_size=[500]))["action"]
    torch.manual_seed(1)
    expected = reference(TensorDict(observation=observation, batch_size=[500]))["action"]
    assert torch.equal(got, expected)
    low, high = spec.space.low, spec.space.high
    assert (got == low).any() and (got == high).any() and ((got > low) & (got < high)).any()
    assert {t.device.type for t in ours.buffers()} == {device}  # noise drawn on the device


@needs_cuda
@pytest.mark.parametrize("loss", ["sac_v1", "sac_v2", "td3"])
def test_acting_policy_step_on_the_gpu_waits_for_nothing_on_the_host(loss):
    # What the collector runs at every step: the actor (TD3's behind the exploration noise). On a
    # GPU no part of it may read a value on the host or copy the action bounds over again.
    env = make_env("Pendulum-v1")
    policy = make_agent(env, make_cfg(f"loss={loss}"), torch.device("cuda")).policy
    td = TensorDict(observation=torch.randn(1, 3, device="cuda"), batch_size=[1])
    with set_exploration_type(ExplorationType.RANDOM):
        policy(td.clone())  # first call outside the check: lazy initialisation is allowed
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any host read of a GPU value raises
        try:
            policy(td.clone())
        finally:
            torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- RNG in checkpoints
def _checkpoint(rng: dict) -> dict:
    """A checkpoint with the entries every sac_tr checkpoint has (empty) and ``rng``."""
    return {"frames": 0, "updates": 0, "loss": {}, "optimizer": {}, "config": "", "rng": rng}


def test_a_checkpoint_without_cuda_states_restores_the_cpu_generators(tmp_path):
    # The keys an older sac_tr wrote: no "cuda" entry. Resuming from it must still work.
    state = {k: v for k, v in get_rng_state().items() if k != "cuda"}
    expected = torch.rand(5)
    torch.rand(100)
    save_checkpoint(_checkpoint(state), tmp_path / "old.pt")
    set_rng_state(load_checkpoint(tmp_path / "old.pt")["rng"])
    assert torch.equal(torch.rand(5), expected)


@needs_cuda
def test_checkpointed_rng_state_restores_the_cuda_generator(tmp_path):
    torch.cuda.manual_seed(0)
    torch.zeros(1, device="cuda")  # CUDA in use in this process
    state = get_rng_state()
    expected = torch.rand(5, device="cuda")  # what the policy noise / buffer indices would draw
    torch.rand(100, device="cuda")
    save_checkpoint(_checkpoint(state), tmp_path / "gpu.pt")
    set_rng_state(load_checkpoint(tmp_path / "gpu.pt")["rng"])
    assert torch.equal(torch.rand(5, device="cuda"), expected)


def test_checkpoint_rng_carries_the_cuda_generators_once_cuda_is_in_use(monkeypatch, tmp_path):
    # Without a GPU, torch.cuda's generator functions are replaced by two recorded states: the
    # checkpoint must save every CUDA generator once CUDA is in use and restore those this
    # machine has (here one of the two). The GPU test above checks the real generators.
    saved = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in saved])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    save_checkpoint(_checkpoint(get_rng_state()), tmp_path / "gpu.pt")
    set_rng_state(load_checkpoint(tmp_path / "gpu.pt")["rng"])
    assert [s.tolist() for s in restored] == [[1, 2]]
