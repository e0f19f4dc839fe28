"""Fault tolerance pieces in one process: the batch split, the healing state, the config, the
lighthouse, and the spare-device failover on a two-chip npusim under a real torchft Manager."""
from __future__ import annotations

import socket
from collections import Counter

import numpy as np
import pytest

import accel

pytest.importorskip("torchft")

from accel.distributed.fault_tolerance.config import FaultToleranceConfig  # noqa: E402
from accel.distributed.fault_tolerance.lighthouse import LighthouseError, start_lighthouse  # noqa: E402
from accel.distributed.fault_tolerance.state import HealError, ReplicaState, from_wire, to_wire  # noqa: E402
from accel.train.errors import TrainConfigError  # noqa: E402
from accel.train.fault_tolerant import StepPlan  # noqa: E402


@pytest.mark.parametrize("participants", [1, 2, 3, 4])
def test_constant_policy_covers_the_global_batch_once_for_any_quorum(participants):
    plan = StepPlan(global_batch=10, micro_batch=2, replicas=4, policy="constant")
    ids = Counter(i for r in range(participants) for i in plan.samples(7, participants, r))
    assert ids == Counter(range(70, 80))


def test_shrink_policy_scales_the_batch_with_the_quorum():
    plan = StepPlan(global_batch=12, micro_batch=2, replicas=4, policy="shrink")
    ids = sorted(i for r in range(3) for i in plan.samples(2, 3, r))
    assert ids == list(range(24, 33))  # 3 of 4 replicas: 9 of the 12 samples of step 2's slot
    with pytest.raises(TrainConfigError, match="divide among the 5 replicas"):
        StepPlan(global_batch=12, micro_batch=2, replicas=5, policy="shrink")


def test_config_refuses_bad_values():
    with pytest.raises(TrainConfigError, match="constant"):
        FaultToleranceConfig(batch_policy="grow")
    with pytest.raises(TrainConfigError, match="min-replicas"):
        FaultToleranceConfig(replicas=2, min_replicas=3)
    cfg = FaultToleranceConfig(replicas=3, timeout_s=2.5, spare_device="npusim:ascend910b:1")
    assert FaultToleranceConfig.from_env(cfg.to_env()) == cfg


def _state(seed=0, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    t = lambda: accel.from_numpy(rng.standard_normal(shape).astype(np.float32), "numpy")
    from accel.autodiff.optim import AdamState

    return ReplicaState({"w": t(), "b": t()}, AdamState(5, {"w": t(), "b": t()}, {"w": t(), "b": t()}),
                        step=5, samples=30, seed=seed)


def test_healing_state_crosses_the_wire_bitwise_and_refuses_a_foreign_peer():
    state = _state()
    back = from_wire(to_wire(state), _state(), "numpy")
    assert (back.step, back.samples, back.seed, back.opt.step) == (5, 30, 0, 5)
    for name in ("w", "b"):
        for a, b in ((state.params, back.params), (state.opt.m, back.opt.m), (state.opt.v, back.opt.v)):
            assert np.array_equal(accel.asnumpy(a[name]).view(np.uint32), accel.asnumpy(b[name]).view(np.uint32))
    with pytest.raises(HealError, match="seed 0.*with 1"):
        from_wire(to_wire(state), _state(seed=1), "numpy")
    with pytest.raises(HealError, match="--model-config"):
        from_wire(to_wire(state), _state(shape=(4, 4)), "numpy")


def test_lighthouse_on_a_taken_port_is_a_clear_error():
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LighthouseError, match=f"could not listen.*{port}"):
            start_lighthouse(FaultToleranceConfig(replicas=1), port=port)


def _train_npusim(tmp_path, name, spare, fault_at):
    """One replica under a real lighthouse and Manager (its own TCPStore), on npusim chip 0."""
    from accel.cli.train import _model_config, default_data
    from accel.io.tokenizer import Tokenizer
    from accel import models
    from accel.models.llama import causal_lm_loss, init_params
    from accel.train.data import TokenData
    from accel.train.fault_tolerant import train_fault_tolerant
    from accel.train.loop import TrainConfig

    chip0 = accel.get_backend("npusim:ascend910b:0")
    tokenizer = Tokenizer.from_file(models.bundled_path())
    config = _model_config("micro", tokenizer)
    cfg = TrainConfig(steps=4, batch_size=2, seq_len=16, warmup=2)
    data = TokenData.from_text_file(default_data(), tokenizer)
    params = init_params(config, cfg.seed, chip0, accel.float32)
    server = start_lighthouse(FaultToleranceConfig(replicas=1))
    ft = FaultToleranceConfig(replicas=1, lighthouse=server.address(), spare_device=spare, timeout_s=20)
    chip0.configure(fault_at=fault_at)
    try:
        return train_fault_tolerant(causal_lm_loss(config), params, data, cfg, chip0, ft, str(tmp_path / name),
                                    global_batch=4, replica="0")
    finally:
        chip0.configure(fault_at=None)
        server.shutdown()


# a step here is ~870 kernel launches of forward/backward then ~440 of clipping and AdamW
@pytest.mark.parametrize("fault_at", [1000, 1500], ids=["in-update", "in-backward"])
def test_device_error_moves_the_rank_to_its_spare_chip_and_the_curve_is_unchanged(tmp_path, monkeypatch, fault_at):
    monkeypatch.setenv("ACCEL_NPUSIM_DEVICES", "2")
    for var in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    clean = _train_npusim(tmp_path, "clean", spare="", fault_at=None)
    faulty = _train_npusim(tmp_path, "faulty", spare="npusim:ascend910b:1", fault_at=fault_at)
    from accel.distributed.fault_tolerance.report import fold

    record = fold(str(tmp_path / "faulty"))
    assert [m["failed_device"] for m in record["device_retries"]] == ["npusim:ascend910b:0"]
    assert record["device_retries"][0]["spare"] == "npusim:ascend910b:1"
    assert "injected" in record["device_retries"][0]["error"]
    assert faulty.steps_redone == 0 and len(faulty.losses) == 4
    assert faulty.losses == clean.losses  # same chip model, same numerics: the curve is unchanged
    assert faulty.state.params["model.embed_tokens.weight"].backend.spec == "npusim:ascend910b:1"
    for name, p in clean.state.params.items():
        assert np.array_equal(accel.asnumpy(p), accel.asnumpy(faulty.state.params[name])), name


def test_device_error_without_a_spare_fails_the_step_and_it_is_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_NPUSIM_DEVICES", "2")
    for var in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    clean = _train_npusim(tmp_path, "clean", spare="", fault_at=None)
    faulty = _train_npusim(tmp_path, "nospare", spare="", fault_at=1500)  # in step 1's backward
    assert faulty.steps_redone == 1 and faulty.losses == clean.losses


def test_cli_refuses_a_batch_the_replicas_cannot_share_before_starting_anything(tmp_path, capsys):
    from accel.cli.main import main

    code = main(["train", "--fault-tolerant", "--nproc-per-node", "3", "--ft-batch-policy", "shrink",
                 "--global-batch-size", "7", "--model-config", "micro", "--backend", "numpy",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "divide among the 3 replicas" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "ft").exists()  # no lighthouse, no torchrun was started
    code = main(["train", "--fault-tolerant", "--resume", str(tmp_path), "--out", str(tmp_path / "run")])
    assert code == 1 and "no complete training checkpoint" in capsys.readouterr().err
    code = main(["train", "--fault-tolerant", "--zero", "1", "--out", str(tmp_path / "run")])
    assert code == 1 and "--zero cannot be combined with --fault-tolerant" in capsys.readouterr().err


def test_npusim_simulates_several_chips_and_confines_injected_faults_to_one(monkeypatch):
    from accel.backends.npusim import NpuSimBackend

    monkeypatch.setenv("ACCEL_NPUSIM_DEVICES", "2")
    monkeypatch.setenv("ACCEL_NPUSIM_FAULT_AT", "1")
    monkeypatch.setenv("ACCEL_NPUSIM_FAULT_DEVICE", "ascend910b:0")
    assert {"ascend910b:0", "ascend910b:1"} <= set(NpuSimBackend.probe().devices)
    chip0, chip1 = NpuSimBackend("ascend910b:0"), NpuSimBackend("ascend910b:1")
    assert chip0.profile.name == chip1.profile.name == "ascend910b" and chip0.memory is not chip1.memory
    assert chip0.faults.plan.at == 1 and not chip1.faults.plan.active
    x = np.ones(4, np.float32)
    with pytest.raises(accel.DeviceError, match="ascend910b:0"):
        accel.ops.add(accel.from_numpy(x, chip0), 1.0)
    assert accel.asnumpy(accel.ops.add(accel.from_numpy(x, chip1), 1.0)).tolist() == [2.0] * 4
