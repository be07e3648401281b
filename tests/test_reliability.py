"""Exact resume, determinism, the replay buffer on disk, numerical faults (issue 7)."""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import DEVICES
from hydra import compose, initialize_config_dir
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

import sac_tr.agent as agent_module
import sac_tr.train as train_module
from sac_tr.checkpoint import buffer_dir, find_checkpoint, load_checkpoint
from sac_tr.envs import make_env
from sac_tr.evaluation import evaluate
from sac_tr.faults import NonFiniteError, NonFiniteInjector
from sac_tr.train import TrainingRun, train

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "env.init_random_frames=100",
    "batch_size=32",
    "network.hidden_sizes=[32,32]",
    "eval.episodes=2",
    "eval.max_steps=50",
    "log_every_updates=50",
    "progress=false",
    "threads=1",
    "logger=none",
    "eval.video_every=0",
]


def make_cfg(env: str, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="sac_mujoco", overrides=[f"env={env}", *SMALL, *overrides])


def eval_returns(run_dir: Path) -> list[tuple[str, str, str]]:
    """(frames, updates, return_mean) of every evaluation; wall time left out."""
    rows = (run_dir / "eval.csv").read_text().splitlines()[1:]
    return [tuple(r.split(",")[:3]) for r in rows]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "env, n", [("pendulum", 300), ("halfcheetah", 240)], ids=["pendulum", "mujoco"]
)
def test_n_frames_equal_n_half_then_resume_n_half_exactly(tmp_path, env, n, device):
    # Pendulum's episodes last 200 frames and HalfCheetah's 1,000: the cut at n/2 falls in the
    # middle of an episode, so the environment's state must be carried over as well. On a GPU
    # the policy noise, the loss's samples and the buffer's indices come from the CUDA
    # generator, which the checkpoint must carry too; stochastic evaluation draws from it too.
    every = (
        f"eval.every_frames={n // 2}",
        f"checkpoint.every_frames={n // 2}",
        f"device={device}",
        "eval.stochastic=true",
    )
    whole = train(make_cfg(env, f"total_frames={n}", *every), tmp_path / "whole")
    train(make_cfg(env, f"total_frames={n // 2}", *every), tmp_path / "split")
    split = train(
        make_cfg(env, f"total_frames={n}", *every, f"resume={tmp_path / 'split'}"), "/unused"
    )
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(split.checkpoint)
    assert (a["frames"], a["updates"]) == (b["frames"], b["updates"]) == (n, n - 100 + 1)
    assert a["loss"].keys() == b["loss"].keys()
    for key in a["loss"]:
        assert torch.equal(a["loss"][key], b["loss"][key]), key
    for index, moments in a["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(b["optimizer"]["state"][index][name], value), (index, name)
    assert eval_returns(tmp_path / "whole") == eval_returns(tmp_path / "split")
    assert len(eval_returns(tmp_path / "whole")) == 2
    # The two runs' buffers hold the same transitions in the same slots.
    buffers = []
    for ckpt in (whole.checkpoint, split.checkpoint):
        rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1_000_000))
        rb.loads(buffer_dir(ckpt))
        buffers.append(rb[:n])
    assert (buffers[0] == buffers[1]).all()


def test_same_seed_same_first_1000_updates_other_seed_differs(tmp_path, monkeypatch):
    recorded: list[list[torch.Tensor]] = []

    def recording_update(agent, batch, **kwargs):
        out = real_update(agent, batch, **kwargs)
        recorded[-1].append(torch.stack([out[k] for k in sorted(out.keys()) if "loss" in k]))
        return out

    real_update = train_module.update
    monkeypatch.setattr(train_module, "update", recording_update)
    frames = ("total_frames=1099", "eval.every_frames=1099", "checkpoint.every_frames=1099")
    for seed, name in ((0, "a"), (0, "b"), (1, "c")):
        recorded.append([])
        train(make_cfg("pendulum", f"seed={seed}", *frames), tmp_path / name)
    first, again, other = (torch.stack(r) for r in recorded)
    assert first.shape == (1000, 3)  # loss_actor, loss_qvalue, loss_value for 1,000 updates
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_disk_buffer_survives_a_restart(tmp_path):
    common = ("buffer.storage=disk", "eval.every_frames=100", "checkpoint.every_frames=100")
    first = train(make_cfg("pendulum", "total_frames=200", *common), tmp_path)
    assert list((tmp_path / "buffer").rglob("*.memmap")), "the storage is memory-mapped files"
    saved = TensorDictReplayBuffer(storage=LazyTensorStorage(1_000_000))
    saved.loads(buffer_dir(first.checkpoint))
    # A new process: a fresh run object reopens the run directory and continues.
    resumed = TrainingRun(
        make_cfg("pendulum", "total_frames=300", f"resume={tmp_path}"),
        tmp_path,
        (load_checkpoint(first.checkpoint), first.checkpoint),
    )
    assert len(resumed.buffer) == 200
    assert (resumed.buffer[:200] == saved[:200]).all()
    resumed.finish()


# ----------------------------------------------------------------------------- numerical faults
def _register(env_id: str, **injector) -> str:
    if env_id not in gym.registry:
        gym.register(
            env_id,
            entry_point=lambda **kw: NonFiniteInjector(gym.make("Pendulum-v1", **kw), **injector),
        )
    return env_id


FAULT = ("total_frames=300", "eval.every_frames=1000", "checkpoint.every_frames=1000")


def test_nan_reward_stops_the_run_with_frame_key_and_a_good_checkpoint(tmp_path):
    env_id = _register("NaNRewardPendulum-v1", at_steps={150}, target="reward")
    with pytest.raises(NonFiniteError) as err:
        train(make_cfg("pendulum", f"env.id={env_id}", *FAULT), tmp_path)
    message = str(err.value)
    assert "frame 150" in message and "('next', 'reward')" in message
    assert "nan_guard=true" in message and "step_0000000150.pt" in message
    state = load_checkpoint(find_checkpoint(tmp_path))
    assert state["frames"] == 150
    assert all(torch.isfinite(v).all() for v in state["loss"].values())


def test_a_run_stopped_on_a_nan_continues_with_nan_guard_from_its_checkpoint(tmp_path, capsys):
    # What the stop's message says to do: the same command, resume=<checkpoint>, nan_guard=true.
    env_id = _register("NaNRewardPendulum-v1", at_steps={150}, target="reward")
    with pytest.raises(NonFiniteError) as err:
        train(make_cfg("pendulum", f"env.id={env_id}", *FAULT), tmp_path)
    checkpoint = find_checkpoint(tmp_path)
    assert f"resume={checkpoint}) after fixing the cause, or add nan_guard=true" in str(err.value)
    summary = train(
        make_cfg("pendulum", f"env.id={env_id}", "nan_guard=true", f"resume={checkpoint}", *FAULT),
        tmp_path,
    )
    assert summary.frames == 300 and not summary.already_finished
    out = capsys.readouterr().out
    assert "with nan_guard=true (the run had false): from 150 frames on" in out
    state = load_checkpoint(summary.checkpoint)
    # The injector of the rebuilt environment counts its steps from 0, so it fires again at its
    # step 150, frame 300: dropped now. Frame 150's transition stopped the run before it was
    # stored. One update per frame from frame 100, none at the stop: 50 + 150.
    assert state["skipped_transitions"] == 1 and state["updates"] == 200
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(1_000_000))
    buffer.loads(buffer_dir(summary.checkpoint))
    assert len(buffer) == 298
    assert torch.isfinite(buffer[:298]["next", "reward"]).all()


def test_nan_guard_drops_bad_transitions_and_the_run_finishes(tmp_path):
    env_id = _register("NaNObsPendulum-v1", at_steps={120, 130}, target="both")
    summary = train(make_cfg("pendulum", f"env.id={env_id}", "nan_guard=true", *FAULT), tmp_path)
    state = load_checkpoint(summary.checkpoint)
    assert summary.frames == 300
    # A NaN observation is acted on (NaN action, NaN state) until the episode ends at frame 200,
    # so the transitions of frames 120..200 are all dropped: 81 of them.
    assert state["skipped_transitions"] == 81
    assert all(torch.isfinite(v).all() for v in state["loss"].values())


def test_nan_guard_dropping_the_last_transition_before_a_checkpoint_still_saves(tmp_path):
    # Frame 300 is the last and a checkpoint frame: its transition is dropped, so the buffer's
    # last write would be an empty one, which TorchRL's buffer checkpointer cannot save.
    env_id = _register("NaNAtTheEndPendulum-v1", at_steps={300}, target="reward")
    summary = train(make_cfg("pendulum", f"env.id={env_id}", "nan_guard=true", *FAULT), tmp_path)
    state = load_checkpoint(summary.checkpoint)
    assert summary.frames == 300 and state["skipped_transitions"] == 1


@pytest.mark.parametrize(
    "at, every, rows_before, rows_after",
    [
        # Frame 300 is the last: the stop's checkpoint at 300 precedes the final evaluation.
        (300, 1000, [], ["300"]),
        # Frame 200 is an evaluation frame: the checkpoint at 200 precedes that evaluation, and a
        # resumed run would never cross 200 again.
        (200, 100, ["100"], ["100", "200", "300"]),
    ],
    ids=["last-frame", "eval-frame"],
)
def test_a_fault_before_a_due_evaluation_leaves_it_to_the_resume(
    tmp_path, capsys, at, every, rows_before, rows_after
):
    # What resuming such a stop (as its message says, or a campaign's resume=auto) must do: make
    # that evaluation, not leave a hole or report "already finished" with no last row. The row a
    # resume killed before its checkpoint would leave (made up here: 12345) is not counted.
    env_id = _register(f"NaNAt{at}Pendulum-v1", at_steps={at}, target="reward")
    fault = (f"env.id={env_id}", *FAULT, f"eval.every_frames={every}", "eval.max_steps=20")
    with pytest.raises(NonFiniteError, match=f"frame {at}"):
        train(make_cfg("pendulum", *fault), tmp_path)
    stopped_at = find_checkpoint(tmp_path)
    stopped = load_checkpoint(stopped_at)
    assert stopped["frames"] == at and stopped["evals"] == len(rows_before)
    assert [row[0] for row in eval_returns(tmp_path)] == rows_before
    # The checkpoint's policy, evaluated here by hand on the recipe's evaluation environment.
    cfg = make_cfg("pendulum", *fault)
    agent = agent_module.make_agent(make_env(env_id, seed=cfg.seed), cfg, "cpu")
    agent.loss.load_state_dict(stopped["loss"])
    expected = evaluate(
        make_env(env_id, seed=cfg.seed + 10_000),
        agent.actor,
        cfg.eval.episodes,
        cfg.eval.max_steps,
        seed=cfg.seed + 10_000,
    ).mean()
    with (tmp_path / "eval.csv").open("a") as f:
        f.write(f"{at},{stopped['updates']},12345.0,0.0,2,1.0\n")
    buffer_inode = buffer_dir(stopped_at).stat().st_ino

    summary = train(make_cfg("pendulum", *fault, "resume=auto"), tmp_path)
    out = capsys.readouterr().out
    assert f"a fault stopped the run at {at} frames before the evaluation due there" in out
    assert not summary.already_finished and summary.frames == 300
    rows = eval_returns(tmp_path)
    assert [row[0] for row in rows] == rows_after
    assert float(rows[len(rows_before)][2]) == float(expected)  # the resume's, at `at`
    again = train(make_cfg("pendulum", *fault, "resume=auto"), tmp_path)
    assert again.already_finished and again.last_eval_return == summary.last_eval_return
    if at == 300:  # the checkpoint at 300 written again: one more evaluation, nothing else
        resaved = load_checkpoint(find_checkpoint(tmp_path))
        assert resaved["evals"] == 1 and resaved["updates"] == stopped["updates"]
        for key, value in stopped["loss"].items():  # the evaluation trained nothing
            assert torch.equal(resaved["loss"][key], value), key
        # The environment the run stopped in, for a later resume with more total_frames.
        assert resaved["collector"] is not None
        before, after = (
            torch.utils._pytree.tree_flatten_with_path(state["collector"])[0]
            for state in (stopped, resaved)
        )
        assert [path for path, _ in before] == [path for path, _ in after]
        for (path, x), (_, y) in zip(before, after, strict=True):  # NaN: the stop's own reward
            x, y = np.asarray(x), np.asarray(y)
            assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), path
        # The buffer (nothing added since the stop) was not written again.
        assert buffer_dir(stopped_at).stat().st_ino == buffer_inode


@pytest.mark.parametrize(
    "checks, stop_message",
    [
        ("per_update", r"(?s)non-finite loss.*loss_qvalue is inf.*reward"),
        # CUDA's path (flags on the device, read at log and save time), forced here on the CPU.
        ("deferred", r"(?s)non-finite loss in \d+ of the updates.*loss_qvalue on \d+"),
    ],
)
def test_a_nonfinite_loss_is_named_and_skipped_under_nan_guard(
    tmp_path, monkeypatch, checks, stop_message
):
    # A finite but huge reward squares to inf in the Q regression: the data check lets it in,
    # the loss check must catch it before any parameter moves.
    monkeypatch.setattr(agent_module, "defers_fault_checks", lambda *_: checks == "deferred")
    env_id = _register("HugeRewardPendulum-v1", at_steps={110}, target="reward", value=3e38)
    with pytest.raises(NonFiniteError, match=stop_message):
        train(make_cfg("pendulum", f"env.id={env_id}", *FAULT), tmp_path / "stop")
    state = load_checkpoint(tmp_path / "stop")
    assert all(torch.isfinite(v).all() for v in state["loss"].values())
    guarded = train(make_cfg("pendulum", f"env.id={env_id}", "nan_guard=true", *FAULT), tmp_path)
    state = load_checkpoint(guarded.checkpoint)
    # Every batch that drew the huge transition (stored at frame 110) was skipped. Batches of 32
    # drawn with replacement from the f transitions held at frame f contain it with probability
    # p_f = 1 - (1 - 1/f)^32; the count skipped is a sum of independent Bernoulli(p_f).
    p = [1 - (1 - 1 / f) ** 32 for f in range(110, 301)]
    mean, std = sum(p), sum(q * (1 - q) for q in p) ** 0.5
    assert abs(state["skipped_updates"] - mean) < 5 * std, (state["skipped_updates"], mean, std)
    assert state["updates"] + state["skipped_updates"] == 201
    assert all(torch.isfinite(v).all() for v in state["loss"].values())


def test_nonfinite_parameters_are_never_checkpointed(tmp_path):
    run = TrainingRun(make_cfg("pendulum", "total_frames=300"), tmp_path)
    with torch.no_grad():
        next(iter(run.agent.loss.qvalue_network_params.values(True, True)))[0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"NaN/inf in the parameters \['qvalue") as err:
        run.save()
    # nothing to resume from, and nan_guard (which drops data and skips losses) would not help
    assert "No checkpoint was written yet: fix the cause and start again" in str(err.value)
    assert "lower the learning rates" in str(err.value) and "nan_guard" not in str(err.value)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))
    run.collector.shutdown()


@pytest.mark.parametrize("env_id", ["Ant-v5", "Pendulum-v1"])
def test_gym_state_round_trip_continues_the_same_trajectory(env_id, tmp_path):
    # Ant reads body positions (derived by the simulator, one sub-step stale) before each step:
    # the restored environment must reproduce those too, not only qpos and qvel.
    from sac_tr.env_state import capture_gym_state, restore_gym_state

    original, copy = gym.make(env_id), gym.make(env_id)
    original.reset(seed=1)
    copy.reset(seed=2)
    original.action_space.seed(0)
    actions = [original.action_space.sample() for _ in range(40)]
    for action in actions[:20]:
        original.step(action)
    torch.save(capture_gym_state(original), tmp_path / "state.pt")
    restore_gym_state(copy, torch.load(tmp_path / "state.pt", weights_only=True))
    for action in actions[20:]:
        a, b = original.step(action), copy.step(action)
        assert (a[0] == b[0]).all() and a[1:4] == b[1:4]
    assert (original.reset()[0] == copy.reset()[0]).all()  # the generators continue alike too
