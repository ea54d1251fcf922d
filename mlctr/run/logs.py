"""What a run writes as it goes: metrics.jsonl, TensorBoard scalars, the log lines.

The log lines are for a person watching the run: per-peer values named and rounded
(`loss deepfm 0.5089  dcn 0.5322`), one progress line per epoch with the training
rate, the elapsed time and an estimate of the time left. metrics.jsonl and TensorBoard
keep the full-precision values for programs.
"""
from __future__ import annotations

import json
import os
import time

from absl import logging
import jax

from mlctr import atomic
from mlctr.run import tensorboard
from mlctr.run.errors import RunError

METRICS_FILE = "metrics.jsonl"


def _records_up_to(path: str, last_step: int) -> list[str]:
    """The lines of a metrics.jsonl to keep when a run resumes at `last_step`.

    A kill during a write can leave a half-written last line: it is dropped with a
    warning (its step comes after the checkpoint the run resumes from anyway). A bad
    line before the last one is damage that dropping would hide: a RunError.
    """
    with open(path) as f:
        lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
    kept = []
    for position, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if position < len(lines) - 1:
                raise RunError(f"{path}:{number}: not a JSON record ({e.msg}); only a torn "
                               "last line is dropped on resume: fix or move the file") from None
            logging.warning("%s:%d: dropping a half-written last line (%d characters) left "
                            "by an interrupted run", path, number, len(line.rstrip("\n")))
            continue
        if record.get("step", 0) <= last_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    return kept


def _write_error(path: str, error: OSError) -> RunError:
    """A failed metrics write (a full disk, a read-only work dir) as one line; the
    checkpoints written before it are intact and a rerun resumes from the newest."""
    return RunError(f"cannot write {path}: {error.strerror or error}; the run stops here "
                    "(its last checkpoint is intact: free space or fix the permissions and "
                    "rerun the same command to resume)")


class MetricsWriter:
    """JSON lines in <workdir>/metrics.jsonl and TensorBoard scalars (process 0 only).

    A run that resumes at step k first drops the records after k that the
    interrupted process wrote, so the file reads as one uninterrupted run.
    """

    def __init__(self, workdir: str, start_step: int = 0):
        self.path = os.path.join(workdir, METRICS_FILE)
        self.enabled = jax.process_index() == 0
        self.tensorboard = None
        if not self.enabled:
            return
        if os.path.exists(self.path):
            kept = _records_up_to(self.path, start_step)
            try:
                with atomic.replacing(self.path) as f:
                    f.writelines(kept)
            except OSError as e:
                raise _write_error(self.path, e) from None
        self.tensorboard = tensorboard.SummaryWriter(os.path.join(workdir, "tensorboard"),
                                                     purge_step=start_step + 1)

    def write(self, record: dict, scalars: dict[str, float] | None = None):
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise _write_error(self.path, e) from None
        if scalars:
            self.tensorboard.scalars(record["step"], scalars)
            self.tensorboard.flush()

    def close(self):
        if self.tensorboard is not None:
            self.tensorboard.close()


def per_peer_scalars(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """TensorBoard tags `prefix/<peer>`."""
    return {f"{prefix}/{name}": value for name, value in values.items()}


def format_seconds(seconds: float) -> str:
    """h:mm:ss."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def peer_values(values: dict[str, float], digits: int = 4,
                marks: dict[str, str] | None = None) -> str:
    """`deepfm 0.5089  dcn 0.5322`: one rounded value per peer, with optional marks."""
    marks = marks or {}
    return "  ".join(f"{name} {value:.{digits}f}{marks.get(name, '')}"
                     for name, value in values.items())


class Throughput:
    """Training time and rate of one process, over completed steps only.

    Steps are dispatched asynchronously: a step "done" in Python may still be running
    on the device. So the clock books time only at a sync point (`sync`), after
    waiting for the last dispatched step, and the wait is training time: rates, the
    ETA and results.json `train_seconds` measure completed work. (Before, the wait
    happened in the non-finite check ahead of an evaluation and was dropped with the
    evaluation's time: the log showed ~10x the real rate.)

    The first step a process runs compiles the step: the clock starts once it is
    done. Evaluation is not training time: `sync` before it, `resume` after.

    Args:
      batch_size: global examples per step.
    """

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.started = time.perf_counter()
        self.timed_steps, self.timed_seconds = 0, 0.0
        self._interval_start: float | None = None
        self._pending_steps = 0          # dispatched since the last sync
        self._last = None                # the newest step's output, to wait for
        self._log_steps, self._log_seconds = 0, 0.0

    def step_done(self, measurements):
        """Counts one dispatched step; the first one is waited for and not timed (it
        compiled)."""
        if self._interval_start is None:
            jax.block_until_ready(measurements)
            self._interval_start = time.perf_counter()
            return
        self._pending_steps += 1
        self._last = measurements

    def sync(self) -> None:
        """Waits for the dispatched steps and books them, with the time they took."""
        if self._interval_start is None:
            return
        if self._last is not None:
            jax.block_until_ready(self._last)
            self._last = None
        now = time.perf_counter()
        elapsed = now - self._interval_start
        self.timed_steps += self._pending_steps
        self.timed_seconds += elapsed
        self._log_steps += self._pending_steps
        self._log_seconds += elapsed
        self._interval_start, self._pending_steps = now, 0

    def interval(self) -> float:
        """Steps per second of training time since the last call (after a `sync`)."""
        self.sync()
        rate = self._log_steps / self._log_seconds if self._log_seconds > 0 else 0.0
        self._log_steps, self._log_seconds = 0, 0.0
        return rate

    def resume(self):
        """Restarts the clock after an evaluation (call `sync` before it)."""
        if self._interval_start is not None:
            self._interval_start = time.perf_counter()

    @property
    def examples_per_sec(self) -> float:
        """Average training rate over the completed, timed steps so far (0 before any)."""
        if self.timed_seconds <= 0:
            return 0.0
        return self.timed_steps * self.batch_size / self.timed_seconds

    def eta(self, steps_left: int) -> float | None:
        """Seconds of training left at the average rate; None before any timed step."""
        if self.timed_steps == 0:
            return None
        return steps_left * self.timed_seconds / self.timed_steps


def log_train(step: int, total_steps: int, losses: dict[str, float], examples_per_sec: float):
    logging.info("step %d/%d  loss %s  (%.0f examples/s)", step, total_steps,
                 peer_values(losses), examples_per_sec)


def log_eval(step: int, valid: dict[str, dict[str, float]], improved: dict[str, bool],
             stopped: dict[str, bool]):
    """Valid AUC and logloss per peer; `*` marks a new best, `(stopped)` a stopped peer."""
    marks = {name: ("*" if improved.get(name) else "") + (" (stopped)" if stopped.get(name)
                                                          else "") for name in valid}
    logging.info("step %d  valid auc %s", step,
                 peer_values({n: m["auc"] for n, m in valid.items()}, 5, marks))
    logging.info("step %d  valid logloss %s", step,
                 peer_values({n: m["logloss"] for n, m in valid.items()}, 5))


def log_epoch(epoch: int, num_epochs: int, step: int, total_steps: int, clock: Throughput):
    """The progress line: where the run is, its rate, elapsed time and time left.

    The clock is synced first, so the rate and ETA count every completed step; before
    any step is timed (only the compiling one has run) they read "-", not 0."""
    clock.sync()
    eta = clock.eta(total_steps - step)
    rate = f"{clock.examples_per_sec:.0f}" if clock.timed_steps else "-"
    logging.info("epoch %d/%d  step %d/%d  %s examples/s  elapsed %s  ETA %s", epoch + 1,
                 num_epochs, step, total_steps, rate,
                 format_seconds(time.perf_counter() - clock.started),
                 "-" if eta is None else format_seconds(eta))


def log_results(results: dict, workdir: str):
    """The final lines: each peer's best weights on valid (and test)."""
    for split in ("valid", "test"):
        if split in results:
            logging.info("best weights, %s auc %s", split,
                         peer_values({n: m["auc"] for n, m in results[split].items()}, 5))
    logging.info("%d steps; results in %s", results["steps"],
                 os.path.join(workdir, "results.md"))


BROKEN_MARK = "†"


def broken_notes(results: dict) -> dict[str, str]:
    """{peer: what was broken} for a run's peers whose predictions broke (saturated, or a
    logloss far above a constant's): at evaluations (never kept as best) or with the best
    weights themselves. Empty for a run from before these checks."""
    notes: dict[str, list[str]] = {}
    flagged = results.get("schedule", {}).get("flagged_steps") or []
    for name, steps in zip(results.get("peers", []), flagged):
        if steps:
            notes.setdefault(name, []).append(
                f"valid predictions broken at step(s) {', '.join(map(str, steps))} (not kept "
                "as best)")
    for split, peers in results.get("broken", {}).items():
        for name, why in peers.items():
            notes.setdefault(name, []).append(f"best weights on {split}: {why}")
    return {name: "; ".join(parts) for name, parts in notes.items()}


def results_markdown(results: dict) -> str:
    """The final table of a run: each peer's best weights on valid (and test); a peer whose
    predictions broke is marked (`broken_notes`)."""
    splits = [s for s in ("valid", "test") if s in results]
    notes = broken_notes(results)
    header = "| peer | " + " | ".join(f"{s} AUC | {s} logloss" for s in splits) + " |"
    lines = [header, "|---" * (1 + 2 * len(splits)) + "|"]
    for name in results[splits[0]]:
        cells = " | ".join(f"{results[s][name]['auc']:.5f} | {results[s][name]['logloss']:.5f}"
                           for s in splits)
        mark = f" {BROKEN_MARK}" if name in notes else ""
        lines.append(f"| {name}{mark} | {cells} |")
    for name, note in notes.items():
        lines.append(f"\n{BROKEN_MARK} {name}: {note}.")
    for split in splits:
        bayes = results.get("bayes", {}).get(split)
        if bayes:
            lines.append(f"\nBayes-optimal on this synthetic {split} split: AUC "
                         f"{bayes['auc']:.5f}, logloss {bayes['logloss']:.5f}.")
    lines.append(f"\n{results['steps']} steps; best step per peer: "
                 + ", ".join(f"{n} {s}" for n, s in zip(results["peers"],
                                                        results["schedule"]["best_step"])))
    return "\n".join(lines) + "\n"
