"""`accel train` refuses nonsense in one line, never writes a checkpoint it could not resume,
survives real SIGKILLs around a save, catches loss spikes, and says how to resume after a
device fault. Kills and faults are caused for real: a subprocess
SIGKILLed at a chosen point of the save, the simulated NPU's injected device fault."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import accel
from accel.autodiff.optim import AdamW
from accel.cli.main import main
from accel.train.checkpoints import find_checkpoint, save_checkpoint
from accel.train.errors import DivergenceError

from tests.training.test_train import BASE, CORPUS, history

FAST = [*BASE, "--warmup", "0", "--eval-every", "0"]


def cli(*argv, env=None):
    """Run `accel train` in a fresh interpreter: (returncode, stderr)."""
    done = subprocess.run([sys.executable, "-m", "accel", "train", *FAST, *map(str, argv)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return done.returncode, done.stderr


def forked(*argv, env=None) -> int:
    """Run `accel train` in a child process forked from this one (backends already imported, so
    it starts at once); returns its exit code, -9 when it was SIGKILLed."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(list(map(str, argv)), env or {}))
    child.start()
    child.join(300)
    return child.exitcode


def _child(argv, env):
    os.environ.update(env)
    code = main(["train", *FAST, *argv])
    os._exit(code)


def resume(out, *extra) -> int:
    return main(["train", "--resume", str(out), "--no-progress", *map(str, extra)])


def refused(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["train", *FAST, *map(str, argv)]) == 1
    err = capsys.readouterr().err
    assert "\naccel: error: " in "\n" + err and "Traceback" not in err
    return err


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", 0], "--batch-size 0 is invalid"),
    (["--grad-accum", 0], "--grad-accum 0 is invalid"),
    (["--steps", 0], "--steps 0 is invalid"),
    (["--steps", -5], "--steps -5 is invalid"),
    (["--lr", -1], "--lr -1.0 is invalid"),
    (["--lr", "nan"], "--lr nan is invalid"),
    (["--warmup", -3], "--warmup -3 is invalid"),
    (["--save-every", -1], "--save-every -1 is invalid"),
    (["--grad-clip", -1], "--grad-clip -1.0 is invalid"),
    (["--on-spike", "explode"], "--on-spike 'explode' is not one of warn, skip, stop"),
    (["--global-batch-size", 6, "--batch-size", 4], "--batch-size 4 does not divide the global batch 6"),
])
def test_bad_options_are_one_line_errors(capsys, tmp_path, flags, words):
    err = refused(capsys, "--backend", "numpy", "--steps", 2, *flags, "--out", tmp_path / "run")
    assert words in err
    assert not (tmp_path / "run").exists() or not os.listdir(tmp_path / "run")


def test_out_naming_a_file_and_an_earlier_run_are_refused(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file, not a directory" in refused(capsys, "--backend", "numpy", "--steps", 2, "--out", afile)
    out = tmp_path / "run"
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "4", "--save-every", "2", "--out", str(out)]) == 0
    err = refused(capsys, "--backend", "numpy", "--steps", 2, "--out", out)
    assert "already holds a training run" in err and "--overwrite" in err
    assert main(["train", "--resume", str(out), "--steps", "6", "--out", str(afile), "--no-progress"]) == 1
    assert "is a file, not a directory" in capsys.readouterr().err
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-000002",
                                                                                 "checkpoint-000004"]
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "1", "--overwrite", "--out", str(out)]) == 0
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-000001"]


def test_a_corrupted_trainer_state_is_a_clear_error(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "4", "--save-every", "2", "--out", str(out)]) == 0
    (out / "checkpoint-000004" / "trainer_state.json").write_text('{"step": 4, "model_con')
    assert main(["train", "--resume", str(out), "--steps", "6", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint-000004/trainer_state.json is damaged" in err and "Traceback" not in err
    assert "--resume " + str(out / "checkpoint-000002") in err


def test_resume_runs_on_the_checkpoints_backend_and_prints_overrides(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--backend", "torch:cpu", "--steps", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "5", "--lr", "1e-3", "--seed", "7",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "resuming on the checkpoint's backend torch:cpu" in err
    assert "--lr 0.001 overrides the checkpoint's 0.003" in err and "--seed 7 overrides the checkpoint's 0" in err
    summary = history(out)
    assert summary["backend"] == "torch:cpu" and summary["train_config"]["lr"] == 1e-3


def test_non_finite_weights_are_never_saved(tmp_path, capsys):
    # an absurd learning rate: the loss of step 1 is still finite, the weights after it are not
    err = refused(capsys, "--backend", "numpy", "--steps", 3, "--lr", 1e38, "--grad-clip", 0,
                  "--save-every", 1, "--out", tmp_path / "run")
    assert "not saving checkpoint at step 1" in err and "non-finite" in err
    assert not (tmp_path / "run").exists() or not [n for n in os.listdir(tmp_path / "run") if "checkpoint" in n]
    params = {"w": accel.tensor(np.array([[1.0, np.nan]], np.float32), backend="numpy")}
    opt = AdamW().init(params)
    with pytest.raises(DivergenceError, match="weight 'w' has 1 non-finite values"):
        save_checkpoint(str(tmp_path / "direct"), 1, params, opt, {"step": 1})
    assert not os.path.exists(tmp_path / "direct") or not os.listdir(tmp_path / "direct")


def test_loss_spikes_warn_skip_or_stop(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "12", "--save-every", "12",
                 "--schedule-steps", "16", "--out", str(out)]) == 0
    capsys.readouterr()
    # a learning rate 1000x too high for two steps: the loss leaves its running average
    blow_up = ["--steps", "14", "--lr", "3", "--grad-clip", "0", "--spike-factor", "1.5", "--no-progress"]
    assert main(["train", "--resume", str(out), *blow_up, "--on-spike", "stop"]) == 1
    err = capsys.readouterr().err
    assert "loss spike at step 14" in err and "running average" in err and "stopping" in err
    assert main(["train", "--resume", str(out), *blow_up, "--on-spike", "skip"]) == 0
    summary = history(out)
    assert "step skipped" in summary["history"]["spikes"][0]
    assert main(["train", "--resume", str(out / "checkpoint-000012"), *blow_up, "--on-spike", "warn",
                 "--out", str(tmp_path / "warned")]) == 0
    assert "accel: warning: loss spike at step 14" in capsys.readouterr().err


def _losses(out):
    return history(out)["history"]["losses"]


def test_sigkill_between_checkpoint_and_latest_pointer(tmp_path):
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "6", "--out", str(straight)]) == 0
    code = forked("--backend", "numpy", "--steps", 6, "--save-every", 2, "--out", out,
                  env={"ACCEL_TRAIN_CRASH": "before-latest:4"})
    assert code == -signal.SIGKILL
    assert (out / "latest").read_text().strip() == "checkpoint-000002"   # the pointer lags behind
    assert find_checkpoint(str(out)).endswith("checkpoint-000004")      # the scan does not
    assert resume(out) == 0
    assert history(out)["resumed_from"]["step"] == 4
    np.testing.assert_allclose(_losses(out), _losses(straight), rtol=0, atol=1e-6)


def test_sigkill_in_the_middle_of_a_save_and_a_dangling_latest(tmp_path, capsys):
    out = tmp_path / "run"
    code = forked("--backend", "numpy", "--steps", 6, "--save-every", 2, "--out", out,
                  env={"ACCEL_TRAIN_CRASH": "mid-save:4"})
    assert code == -signal.SIGKILL
    assert [n for n in os.listdir(out) if n.startswith(".checkpoint-000004")]   # the half-written save
    (out / "latest").write_text("checkpoint-000099\n")                         # and a pointer to nothing
    capsys.readouterr()
    assert resume(out) == 0
    assert "left behind by a save that was interrupted" in capsys.readouterr().err
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    assert history(out)["resumed_from"]["step"] == 2 and len(_losses(out)) == 6


def test_a_device_fault_names_the_step_and_the_resume_command(tmp_path):
    out = tmp_path / "run"
    # a fresh process, so the simulated NPU reads its fault plan: it fails at its 3000th kernel
    # launch, in step 4 of 6 of this tiny model
    code, err = cli("--backend", "npusim", "--steps", 6, "--save-every", 1, "--out", out,
                    env={"ACCEL_NPUSIM_FAULT_AT": "3000"})
    assert code == 1 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("accel: error:")][0]
    assert "device fault at step 4 of 6 on npusim" in line
    assert f"resume with: accel train --resume {out}" in err
    assert resume(out) == 0
    summary = history(out)
    assert summary["backend"].startswith("npusim") and len(summary["history"]["losses"]) == 6


def test_auto_resume_starts_then_continues(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "2", "--auto-resume", "--out", out]) == 0
    assert history(out)["resumed_from"] is None
    assert main(["train", *FAST, "--backend", "numpy", "--steps", "4", "--auto-resume", "--out", out]) == 0
    assert history(out)["resumed_from"]["step"] == 2 and len(history(out)["history"]["losses"]) == 4
