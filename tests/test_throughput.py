"""The rates a run reports measure completed work (issue 25, item 6).

Steps are dispatched asynchronously; a run whose steps are slow on the device must
still log its real rate: the wait for the dispatched steps is training time, wherever
the loop happens to wait (a log line, an evaluation, the end)."""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from mlctr.run import logs
from mlctr.run import loop
from mlctr.run import train

STEP_SECONDS = 0.05


def _slow_steps(monkeypatch):
    """Every train step is followed, on the device, by a host callback that sleeps
    STEP_SECONDS; the next step and the step's measurements wait for it (it feeds the
    step counter and the losses), as for a step that is itself slow. Returns the list of
    the times the callbacks ran."""
    stamps = []
    make_step = train.make_step

    def sleep(count):
        time.sleep(STEP_SECONDS)
        stamps.append(time.perf_counter())
        return np.zeros((), np.int32)

    @jax.jit
    def slow(step_count, loss):
        slept = jax.pure_callback(sleep, jax.ShapeDtypeStruct((), jnp.int32), step_count)
        return step_count + slept, loss + slept.astype(loss.dtype)

    def slow_make_step(*args, **kwargs):
        train_step = make_step(*args, **kwargs)

        def step(state, batch, alpha, non_finite):
            state, measurements, non_finite = train_step(state, batch, alpha, non_finite)
            step_count, loss = slow(state["step"], measurements["loss"])
            return (dict(state, step=step_count), dict(measurements, loss=loss), non_finite)

        return step

    monkeypatch.setattr(train, "make_step", slow_make_step)
    return stamps


def test_logged_rate_is_the_wall_clock_rate_when_steps_block(tiny_config, tmp_path,
                                                             monkeypatch):
    stamps = _slow_steps(monkeypatch)
    evaluations = []  # (start, end) of each evaluation: not training time
    evaluate = loop.TrainLoop.evaluate

    def timed_evaluate(self, step, epoch):
        start = time.perf_counter()
        evaluate(self, step, epoch)
        evaluations.append((start, time.perf_counter()))

    monkeypatch.setattr(loop.TrainLoop, "evaluate", timed_evaluate)
    # Evaluations between the log lines: where the old clock dropped the wait.
    config = tiny_config(peers="deepfm", eval_steps=5, log_steps=10, max_steps=40, patience=100)
    workdir = str(tmp_path / "run")
    results = train.train_and_evaluate(config, workdir)
    assert len(stamps) == 40

    def wall_seconds(first: int, last: int) -> float:
        """From step `first`'s end to step `last`'s end, less the evaluations between."""
        t0, t1 = stamps[first - 1], stamps[last - 1]
        return t1 - t0 - sum(e - s for s, e in evaluations if t0 <= s and e <= t1)

    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [r for r in map(json.loads, f) if r["kind"] == "train"]
    assert [r["step"] for r in logged] == [10, 20, 30, 40]
    for record in logged:
        first = max(record["step"] - 10, 1)  # the clock starts after the compiling step 1
        wall_rate = 64 * (record["step"] - first) / wall_seconds(first, record["step"])
        assert abs(record["examples_per_sec"] / wall_rate - 1) < 0.10, (record, wall_rate)
    # The whole run: the 39 timed steps, without the evaluations.
    assert abs(results["train_seconds"] / wall_seconds(1, 40) - 1) < 0.10
    assert abs(results["examples_per_sec"] / (64 * 39 / wall_seconds(1, 40)) - 1) < 0.10


def test_progress_line_before_any_timed_step_says_unknown_not_zero(caplog):
    clock = logs.Throughput(batch_size=64)
    with caplog.at_level("INFO", logger="absl"):  # whatever verbosity a test left
        logs.log_epoch(0, 3, 1, 30, clock)
    assert "- examples/s" in caplog.text and "ETA -" in caplog.text
    assert "ETA 0:00:00" not in caplog.text and " 0 examples/s" not in caplog.text


def test_epoch_line_counts_the_steps_of_the_first_epoch(caplog):
    """Before, the average moved only at log lines: '0 examples/s' until the first one."""
    clock = logs.Throughput(batch_size=64)
    clock.step_done(jnp.zeros(()))
    for _ in range(3):
        clock.step_done(jnp.zeros(()))
    with caplog.at_level("INFO", logger="absl"):  # whatever verbosity a test left
        logs.log_epoch(0, 3, 4, 12, clock)
    assert clock.timed_steps == 3 and clock.examples_per_sec > 0
    assert "ETA -" not in caplog.text
