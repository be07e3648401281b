"""End-to-end runs of the SAC recipe on Pendulum-v1: outputs, W&B offline, resume, bad config."""

import csv
import os
import shlex
import sys

import numpy as np
import pytest
import torch
from helpers import DEVICES
from hydra import compose, initialize_config_dir

from sac_tr.checkpoint import CheckpointError, buffer_dir, find_checkpoint, load_checkpoint
from sac_tr.config import ConfigError
from sac_tr.eval_csv import read_eval_rows
from sac_tr.train import TrainingRun, train
from tests.helpers import ROOT, run_script, start_recipe

FAST = [
    "env=pendulum",
    "env.init_random_frames=100",
    "batch_size=32",
    "network.hidden_sizes=[32,32]",
    "eval.every_frames=100",
    "eval.episodes=2",
    "eval.max_steps=50",
    "checkpoint.every_frames=100",
    "log_every_updates=50",
    "progress=false",
    "threads=1",
]


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="sac_mujoco", overrides=[*FAST, *overrides])


@pytest.mark.parametrize("device", DEVICES)
def test_short_run_writes_eval_csv_checkpoint_and_video(tmp_path, device):
    cfg = make_cfg("total_frames=300", "logger=csv", "eval.video_every=3", f"device={device}")
    summary = train(cfg, tmp_path)
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert rows[0] == "frames,updates,return_mean,return_std,episodes,wall_time_s"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [100, 200, 300]
    # Updates start after the random frames: one per frame from frame 100 (UTD 1).
    assert summary.frames == 300 and summary.updates == 201
    assert [int(r.split(",")[1]) for r in rows[1:]] == [1, 101, 201]
    assert (tmp_path / "csv").is_dir()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    # evals 1, 4, 7, ... record, and always the last one: the policy that learned
    assert [v.name for v in videos] == ["eval_000000100.mp4", "eval_000000300.mp4"]
    assert all(v.stat().st_size > 1000 for v in videos)
    state = load_checkpoint(tmp_path)
    assert state["frames"] == 300 and state["updates"] == 201
    assert set(state["loss"]) >= {"target_value_network_params.module.0.weight"}


def test_wandb_offline_run_is_written_locally(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = make_cfg("total_frames=200", "logger=wandb", "eval.video_every=1")
    train(cfg, tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "an offline run directory for `wandb sync`"
    assert list(runs[0].glob("*.wandb")), "the run's event log"
    assert list(runs[0].rglob("*.mp4")), "the eval video logged to the run"


def test_resume_continues_counters_and_parameters(tmp_path):
    # A small learning rate: 100 Adam steps then move a weight by a few 0.01 at most, while a
    # fresh initialisation would differ from the saved weights by order 1.
    common = ("logger=none", "env.lr=1e-4")
    first = train(make_cfg("total_frames=200", "checkpoint.save_buffer=true", *common), tmp_path)
    saved = load_checkpoint(first.checkpoint)
    resumed = train(make_cfg("total_frames=300", f"resume={tmp_path}", *common), "/unused")
    assert resumed.run_dir == tmp_path
    state = load_checkpoint(resumed.checkpoint)
    assert (saved["frames"], state["frames"]) == (200, 300)
    assert state["updates"] == saved["updates"] + 100  # no new random phase after resuming
    rows = (tmp_path / "eval.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [100, 200, 300]
    assert state["optimizer"]["state"][0]["step"] == saved["optimizer"]["state"][0]["step"] + 100
    key = "value_network_params.module.0.weight"
    assert not torch.equal(state["loss"][key], saved["loss"][key])  # it kept learning


@pytest.mark.parametrize("device", DEVICES)
def test_resume_restores_every_network_and_optimizer_state_exactly(tmp_path, device):
    # Resuming at the saved frame count trains nothing, so what it writes back must be exactly
    # what it loaded: every parameter, target, optimizer moment and counter.
    common = ("total_frames=200", "logger=none", f"device={device}")
    path = train(make_cfg(*common), tmp_path).checkpoint
    saved = load_checkpoint(path)
    run = TrainingRun(make_cfg(*common), tmp_path, (saved, path))
    path.unlink()
    state = load_checkpoint(run.save())  # written again from the restored run
    run.finish()
    assert state["loss"].keys() == saved["loss"].keys()
    for key, value in saved["loss"].items():
        assert torch.equal(state["loss"][key], value), key
    for index, moments in saved["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(state["optimizer"]["state"][index][name], value), (index, name)
    assert (state["frames"], state["updates"]) == (saved["frames"], saved["updates"])


def test_truncated_checkpoint_is_named_and_the_previous_one_still_resumes(tmp_path):
    train(make_cfg("total_frames=300", "logger=none", "checkpoint.keep=2"), tmp_path)
    ckpts = sorted((tmp_path / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_0000000200.pt", "step_0000000300.pt"]  # rotated
    assert not (tmp_path / "checkpoints" / "step_0000000100.buffer").exists()
    newest, previous = ckpts[1], ckpts[0]
    newest.write_bytes(newest.read_bytes()[:40])  # a crash mid-copy, a full disk...
    with pytest.raises(CheckpointError, match=r"step_0000000300\.pt.*truncated.*step_0000000200"):
        load_checkpoint(tmp_path)
    resumed = train(make_cfg("total_frames=300", "logger=none", f"resume={previous}"), "/unused")
    assert resumed.run_dir == tmp_path and resumed.frames == 300
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
    # A whole model saved with torch.save(model): named, without torch's weights_only=False advice
    torch.save(torch.nn.Linear(2, 2), newest)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(newest)
    assert "it holds a pickled torch.nn.modules.linear.Linear; a sac_tr checkpoint holds" in str(
        err.value
    )
    assert "weights_only" not in str(err.value)
    torch.save(os.system, newest)  # a file that would run code if unpickled
    with pytest.raises(CheckpointError, match=r"it holds a pickled posix\.system; a sac_tr"):
        load_checkpoint(newest)


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.id=HalfCheetah-v3", "'HalfCheetah-v3' cannot be made here.*HalfCheetah-v5"),
        ("env.id=Nope-v0", "Unknown environment id 'Nope-v0'"),
        ("env.id=CartPole-v1", r"'CartPole-v1' has the action space Discrete\(2\): SAC here acts"),
        ("env.id=Blackjack-v1", r"'Blackjack-v1' has the action space Discrete\(2\)"),
        ("env.id=FrozenLake-v1", r"'FrozenLake-v1' has the action space Discrete\(4\)"),
        ("batch_size=-4", r"batch_size=-4: must be a positive integer"),
        ("loss.gamma=1.5", r"loss.gamma=1.5: must be in \[0, 1\)"),
        ("target_update.kind=polyak", "target_update.kind='polyak'"),
        ("resume=/no/such/run", "resume='/no/such/run': no such file"),
    ],
)
def test_bad_config_fails_before_training(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(override), tmp_path)
    assert not (tmp_path / "eval.csv").exists()


def test_recipe_command_line_rejects_bad_and_unknown_keys(tmp_path):
    def run(*args):
        return run_script(
            "recipes/sac_mujoco.py", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
        )

    bad = run("env=pendulum", "total_frames=0")
    assert bad.returncode == 2 and "total_frames=0: must be a positive integer" in bad.stderr
    unknown = run("env=pendulum", "totl_frames=10")
    assert unknown.returncode != 0 and "totl_frames" in unknown.stderr
    missing_env = run("env=cartpole")
    assert missing_env.returncode != 0 and "cartpole" in missing_env.stderr


def test_a_refused_sweep_job_fails_alone_and_the_others_finish(tmp_path):
    """Under the joblib launcher a job that exits ended the whole sweep and killed the jobs
    running beside it (their progress since the last checkpoint lost). A refused job now fails
    alone: its sibling trains to the end, and the sweep exits 1 naming the refusal."""
    sweep = run_script(
        "recipes/sac_mujoco.py",
        "-m",
        "+sweep=local",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=seed${seed}",
        *FAST,
        "total_frames=300",
        "logger=none",
        "seed=-1,0",
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert sweep.returncode == 1, sweep.stderr[-3000:]
    assert "seed=-1: must be an integer >= 0" in sweep.stderr
    with (tmp_path / "seed0" / "eval.csv").open() as f:
        assert [int(r["frames"]) for r in csv.DictReader(f)] == [100, 200, 300]
    assert not (tmp_path / "seed-1").exists()  # refused before it wrote anything


def test_accelerate_on_refusing_a_users_network_exits_with_the_reason(tmp_path):
    """accelerate=on and a critic it cannot accelerate (LayerNorm): the reason on stderr, exit
    2, no traceback, and no run directory left behind (it is known once the agent is built)."""
    (tmp_path / "normed_parts.py").write_text(
        "from torch import nn\n"
        "from torchrl.modules import MLP, ValueOperator\n\n\n"
        "def make_normed_qvalue(observation_dim, action_dim, *, hidden_sizes, activation):\n"
        "    net = MLP(in_features=observation_dim + action_dim, out_features=1,\n"
        "              num_cells=list(hidden_sizes), activation_class=activation,\n"
        "              norm_class=nn.LayerNorm, norm_kwargs={'normalized_shape': hidden_sizes[0]})\n"
        "    return ValueOperator(net, in_keys=['observation', 'action'])\n"
    )
    refused = run_script(
        "recipes/sac_mujoco.py",
        "env=pendulum",
        "accelerate=on",
        "critic.target=normed_parts.make_normed_qvalue",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "sac_mujoco: accelerate=on: Q (ValueOperator) cannot be accelerated" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "run").exists()


def test_evaluate_recipe_reports_the_saved_policy(tmp_path):
    train(make_cfg("total_frames=200", "logger=none"), tmp_path)
    done = run_script(
        "recipes/evaluate.py",
        f"checkpoint={tmp_path}",
        "episodes=1",
        "max_steps=50",
        "video=true",
        f"video_path={tmp_path / 'play.mp4'}",
    )
    assert done.returncode == 0, done.stderr
    assert "Pendulum-v1, checkpoint at 200 frames" in done.stdout
    assert "over 1 episode (" in done.stdout
    # another evaluation than the run's own: said, instead of a comparison with its eval.csv
    assert "(not compared with the run's eval.csv: episodes=1 (the run's: 2))" in done.stdout
    assert "The run's own evaluation" not in done.stdout
    assert (tmp_path / "play.mp4").stat().st_size > 1000
    missing = run_script("recipes/evaluate.py", "checkpoint=/nope")
    assert missing.returncode == 2 and "No checkpoint at '/nope'" in missing.stderr


def test_evaluate_recipe_remakes_the_runs_own_evaluation_and_checks_its_input(tmp_path):
    """With no episodes/max_steps/seed, evaluate.py makes the run's own evaluation again, in
    another process: its return is the run's eval.csv row at that checkpoint, to the digit."""
    train(make_cfg("total_frames=200", "logger=none"), tmp_path)
    logged = (tmp_path / "eval.csv").read_text().splitlines()[-1].split(",")  # frames,updates,mean
    assert logged[0] == "200"

    def run(*args):
        return run_script("recipes/evaluate.py", *args)

    done = run(f"checkpoint={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert f"deterministic return {float(logged[2]):.1f}" in done.stdout
    assert (
        f"own evaluation at 200 frames ({tmp_path / 'eval.csv'}): {float(logged[2]):.1f}; this one is the same."
        in done.stdout
    )
    bad = run("episodes=0", "max_steps=-2", "device=cuda:99")
    assert bad.returncode == 2
    for problem in (
        "checkpoint: required",
        "episodes=0: must be a positive integer",
        "max_steps=-2: must be a positive integer",
        "device=cuda:99",
    ):
        assert problem in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    # Files that are not checkpoints: named, with what they are, and no traceback.
    text, foreign = tmp_path / "notes.pt", tmp_path / "other.pt"
    text.write_text("hello\n")
    torch.save({"frames": 3}, foreign)
    for path, why in (
        (text, "is not a checkpoint: not a file torch.save wrote (it begins with b'hell')"),
        (foreign, "is not a sac_tr checkpoint (no 'updates', 'loss', 'optimizer', 'config' entry)"),
    ):
        refused = run(f"checkpoint={path}")
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    # Set aside (the run resumed from its 100-frame checkpoint): its row is gone from the run's
    # curve, and is compared with the curve it was on, kept beside it.
    older = next((tmp_path / "checkpoints").glob("step_*100.pt"))
    train(make_cfg("total_frames=150", "logger=none", f"resume={older}"), tmp_path)
    aside = next((tmp_path / "checkpoints" / "abandoned" / "1").glob("step_*200.pt"))
    done = run(f"checkpoint={aside}")
    assert done.returncode == 0, done.stderr
    left = aside.parent / "timeline_eval.csv"
    assert (
        f"own evaluation at 200 frames ({left}): {float(logged[2]):.1f}; this one is the same."
        in (done.stdout)
    )


def test_sac_v2_trains_through_the_same_recipe(tmp_path):
    summary = train(make_cfg("loss=sac_v2", "total_frames=250", "logger=csv"), tmp_path)
    assert summary.updates == 151
    state = load_checkpoint(summary.checkpoint)
    assert (
        "log_alpha" in state["loss"]
        and "target_qvalue_network_params.module.0.weight" in state["loss"]
    )
    assert float(state["loss"]["log_alpha"]) != 0.0  # the temperature was learned (alpha_init = 1)
    assert (
        tmp_path / "csv" / "sac_pendulum_seed0" / "scalars" / "train" / "loss_alpha.csv"
    ).exists()


@pytest.mark.parametrize("parallel", [False, True])
def test_several_environments_per_collector(tmp_path, parallel):
    cfg = make_cfg(
        "total_frames=200",
        "logger=none",
        "collector.num_envs=2",
        "frames_per_batch=2",
        f"collector.parallel={str(parallel).lower()}",
    )
    summary = train(cfg, tmp_path)
    # Batches of 2 frames: the batch that reaches frame 100 earns its 2 updates, then 2 per batch.
    assert summary.frames == 200 and summary.updates == 102
    with pytest.raises(
        ConfigError, match=r"frames_per_batch=3 is not a multiple of collector\.num_envs=2"
    ):
        train(make_cfg("collector.num_envs=2", "frames_per_batch=3"), tmp_path)


def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
    import signal
    import time

    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    run_dir = tmp_path / "run"
    args = [
        *[a.replace("[32,32]", "[32, 32]") for a in FAST],  # a space: quoted in "Resume with"
        "total_frames=100000",
        "logger=none",
        "checkpoint.save_buffer=true",
        "checkpoint.every_frames=100000",
    ]
    proc = start_recipe(run_dir, *args, cwd=tmp_path, text=True)
    eval_csv = run_dir / "eval.csv"
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (
            eval_csv.exists() and len(eval_csv.read_text().splitlines()) >= 3
        ):
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never leave the run behind if the test fails
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Stopped by SIGTERM" in out
    command = next(line for line in out.splitlines() if line.startswith("Resume with: "))
    assert shlex.split(command.removeprefix("Resume with: ")) == [
        "python",
        "recipes/sac_mujoco.py",
        *args,
        f"resume={run_dir}",
    ]
    state = load_checkpoint(run_dir)
    assert 200 <= state["frames"] < 100000  # the periodic checkpoint (every 100,000) never came
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(1_000_000))  # buffer.size
    buffer.loads(buffer_dir(find_checkpoint(run_dir)))
    assert len(buffer) == state["frames"]  # every transition collected so far was kept
    resumed = train(
        make_cfg(
            f"total_frames={state['frames'] + 50}",
            *args[len(FAST) + 1 :],  # the same configuration: only total_frames may change
            f"resume={run_dir}",
        ),
        "/unused",
    )
    assert resumed.frames == state["frames"] + 50 and resumed.updates == state["updates"] + 50


def test_a_closed_terminal_stops_the_run_with_a_checkpoint_and_exit_129(tmp_path):
    """The terminal a run was started from closes (an ssh session drops): the kernel sends the run
    SIGHUP and every later write to that terminal fails (EIO). The run checkpoints and exits 129,
    as it does on SIGTERM; its "Resume with" line, which can no longer be printed, does not turn
    that into an error exit (it did: exit 1)."""
    import pty
    import select
    import signal
    import time

    run_dir = tmp_path / "run"
    args = [*FAST, "total_frames=100000", "logger=none", "checkpoint.every_frames=100000"]
    script = str(ROOT / "recipes" / "sac_mujoco.py")
    pid, terminal = pty.fork()  # the run in a session of its own, the pty its terminal
    if pid == 0:
        try:  # as a terminal's shell starts it (not under nohup, whatever ran the tests)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.chdir(tmp_path)
            os.execv(sys.executable, [sys.executable, script, *args, f"hydra.run.dir={run_dir}"])
        finally:
            os._exit(127)
    eval_csv, shown, status = run_dir / "eval.csv", b"", None
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (
            eval_csv.exists() and len(eval_csv.read_text().splitlines()) >= 3
        ):
            if select.select([terminal], [], [], 0.2)[0]:  # read it, so the run never blocks
                shown += os.read(terminal, 65536)
        os.close(terminal)  # the terminal closes: the kernel hangs it up
        deadline = time.time() + 60
        while status is None and time.time() < deadline:
            done, code = os.waitpid(pid, os.WNOHANG)
            status = os.waitstatus_to_exitcode(code) if done else time.sleep(0.2)
    finally:
        if status is None:  # never leave the run behind if the test fails
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert status == 128 + signal.SIGHUP, shown.decode(errors="replace")[-2000:]
    state = load_checkpoint(run_dir)
    assert 200 <= state["frames"] < 100000  # saved at the stop: the periodic one never came


@pytest.mark.parametrize("closed", ["stdout and stderr", "stdout"])
def test_a_run_whose_output_reader_went_away_trains_to_its_end(tmp_path, closed):
    """``python recipes/sac_mujoco.py ... | less``, then ``q``: the pipe loses its reader and
    every later write fails (EPIPE). The run goes on to its end instead of the next progress
    line raising BrokenPipeError (it did: exit 1, the learning since the last checkpoint lost).
    With stderr still read (only stdout piped), nothing is said there of the lost stdout: no
    logging error from a console handler still writing to it."""
    run_dir = tmp_path / "run"
    args = [*FAST, "total_frames=1500", "logger=none", "progress=true", "eval.every_frames=500"]
    stderr_file = (tmp_path / "stderr.txt").open("w+")
    both = closed == "stdout and stderr"
    run = start_recipe(run_dir, *args, cwd=tmp_path, **({} if both else {"stderr": stderr_file}))
    try:
        assert run.stdout.readline()  # the run has started writing; then its reader goes
        eval_csv = run_dir / "eval.csv"
        assert run.poll() is None  # still training when the pipe closes
        assert not eval_csv.exists() or len(read_eval_rows(eval_csv)) < 3
        run.stdout.close()
        if both:
            run.stderr.close()
        code = run.wait(timeout=240)
    finally:
        if run.poll() is None:  # never leave the run behind if the test fails
            run.kill()
            run.wait()
    assert code == 0
    assert [r["frames"] for r in read_eval_rows(run_dir / "eval.csv")] == ["500", "1000", "1500"]
    assert load_checkpoint(run_dir)["frames"] == 1500
    stderr_file.seek(0)
    said = stderr_file.read()
    assert "Logging error" not in said and "Traceback" not in said, said[-2000:]
    # torchrl's INFO line goes to stdout once, through its own console handler: not a second
    # time to stderr, as it did when the wrapped streams hid that handler from the progress bar
    assert "Initialized LazyTensorStorage" not in said


def test_an_observation_space_sac_cannot_read_is_named():
    """A Box of actions but a Dict of observations (a goal-conditioned task, say)."""
    from gymnasium import spaces

    from sac_tr.envs import check_spaces

    observations = spaces.Dict({"position": spaces.Box(-1, 1, (2,))})
    with pytest.raises(ValueError, match=r"'Goal-v0' has the observation space Dict\("):
        check_spaces("Goal-v0", observations, spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match=r"action space Box\(-inf, inf"):
        check_spaces("Free-v0", spaces.Box(-1, 1, (3,)), spaces.Box(-np.inf, np.inf, (2,)))
    check_spaces("Fine-v0", spaces.Box(-1, 1, (3,)), spaces.Box(-2, 2, (2,)))  # no error
