"""Many small training runs at once on one GPU: one process per run, each with its own CUDA context.

A small model (1M-8M non-embedding parameters) leaves most of an H200 idle: its kernels are short
and the host spends much of each step launching them. Several runs side by side fill those gaps.
Each run here is a separate Python process (its own CUDA context, its own RNG, no shared state)
that calls `trainers.train.train` exactly as `evalsuite train` does, so every run has its own run
directory with `latest/`, `best/`, snapshots, `metrics_stream.jsonl` and `config.yaml`, and is
resumable as any run is (`resume=True` continues each run from its `latest/`).

    from trainers.multirun import plan_runs, launch
    specs = plan_runs(["baseline-tiny"], ["train.data=corpus.txt"], seeds=[1, 2, 3, 4], out_root="runs/sweep")
    outcomes = launch(specs)               # blocks until all four are done; raises nothing per run
    outcomes = launch(specs, resume=True)  # after a kill: every run continues from its latest/

    python -m trainers.multirun baseline-tiny --set train.data=corpus.txt --seeds 1 2 3 4 --out-root runs/sweep

The launcher writes two files into each run directory beside what the trainer writes:
`multirun_config.yaml` (the config the worker loads) and `multirun.log` (the worker's output);
the worker writes `multirun_result.json` (steps, tokens, losses, wall times) when it finishes.
A run that fails does not stop the others; its outcome has the return code and the log's tail.

CUDA MPS (`mps=True`, `--mps`): without it, processes time-slice the GPU (kernels of two CUDA contexts
never run at the same time), so N small runs only fill one run's idle gaps. With MPS, the runs' kernels
share one server context and run concurrently. The launcher starts its own MPS control daemon (pipe and
log folders in a fresh temporary folder, so it never talks to a daemon someone else started), points
every worker at it, checks that an MPS server really served the runs (`RunOutcome.mps_server_seen`),
and stops only that daemon at the end. Without the NVIDIA tool `nvidia-cuda-mps-control`, or if the
daemon does not start, `mps=True` is refused (UserError), never silently ignored.

Stacks (`stack=K`, `--stack K`): consecutive groups of K runs (same config, different seeds) train in one
process as one vmapped stack (trainers.stack.train_stack): one kernel launch does K models' work, where K
processes would each launch their own. Every run still has its own run directory, files and result; the group's
output goes to its first run's `multirun.log`, and the others' `multirun.log` say where.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpora.errors import UserError
from trainers.config import RunConfig, load_config

CONFIG_FILE = "multirun_config.yaml"
LOG_FILE = "multirun.log"
RESULT_FILE = "multirun_result.json"
MPS_CONTROL = "nvidia-cuda-mps-control"


@dataclass
class RunSpec:
    name: str
    config: RunConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.train.out_dir).expanduser()


@dataclass
class RunOutcome:
    name: str
    run_dir: Path
    returncode: int
    wall_s: float
    result: dict[str, Any] | None  # the worker's multirun_result.json; None when it failed
    log_tail: str
    # mps=True: whether the launcher saw an MPS server running while this run ran; None without mps
    mps_server_seen: bool | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None


def plan_runs(
    configs: list[str], overrides: list[str], seeds: list[int], out_root: str | Path
) -> list[RunSpec]:
    """One run per (config, seed): `<out_root>/<config name>-s<seed>`, with train.seed and
    train.out_dir set (after `overrides`, which apply to every run)."""
    if not configs or not seeds:
        raise UserError("multirun needs at least one config and one seed")
    specs = []
    for source in configs:
        stem = Path(source).stem if source.endswith((".yaml", ".yml")) else source
        for seed in seeds:
            name = f"{stem}-s{seed}"
            run_dir = Path(out_root) / name
            config = load_config(source, [*overrides, f"train.seed={seed}", f"train.out_dir={run_dir}"])
            specs.append(RunSpec(name=name, config=config))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"two runs would share a run directory: {sorted({n for n in names if names.count(n) > 1})}")
    return specs


def _worker_env(n_parallel: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # The runs share the host's cores: without a cap every process starts one thread per core.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, n_parallel))))
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class MpsDaemon:
    """A CUDA MPS control daemon that this launcher started; `stop` ends only this one."""

    binary: str
    root: Path  # the temporary folder holding its pipe and log folders (made by start_mps)

    def env(self) -> dict[str, str]:
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.root / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(self.root / "log")}

    def ask(self, command: str) -> str:
        """Send one command to the control daemon (`get_server_list`, `quit`, ...); its reply."""
        done = subprocess.run([self.binary], input=command + "\n", capture_output=True, text=True,
                              env={**os.environ, **self.env()}, timeout=30)
        return done.stdout.strip()

    def server_running(self) -> bool:
        """True while an MPS server (started by the daemon when the first CUDA client connects) runs."""
        return any(line.strip().isdigit() for line in self.ask("get_server_list").splitlines())

    def stop(self) -> None:
        try:
            self.ask("quit")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)  # the folder start_mps made, nothing else


def start_mps() -> MpsDaemon:
    """Start a private MPS control daemon (its own pipe/log folders), or raise UserError."""
    binary = shutil.which(MPS_CONTROL)
    if binary is None:
        raise UserError(f"mps: {MPS_CONTROL} is not on PATH (CUDA MPS comes with the NVIDIA driver's tools); "
                        "run without mps")
    daemon = MpsDaemon(binary, Path(tempfile.mkdtemp(prefix="evalsuite-mps-")))
    for folder in daemon.env().values():
        Path(folder).mkdir()
    done = subprocess.run([binary, "-d"], capture_output=True, text=True, env={**os.environ, **daemon.env()},
                          timeout=30)
    if done.returncode != 0:
        shutil.rmtree(daemon.root, ignore_errors=True)
        raise UserError(f"mps: '{MPS_CONTROL} -d' failed (exit {done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()[:300]}")
    return daemon


def _tail(path: Path, n: int = 20) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def launch(
    specs: list[RunSpec],
    resume: bool = False,
    max_parallel: int | None = None,
    time_limit_s: float | None = None,
    poll_s: float = 0.2,
    mps: bool = False,
    stack: int = 1,
) -> list[RunOutcome]:
    """Run every spec as its own process, at most `max_parallel` at a time (default: all), and wait.

    Without `resume`, a run directory that already holds a checkpoint is refused up front (before
    any process starts), as `trainers.train.train` would refuse it. time_limit_s is passed to each
    run (it stops at a checkpoint and can be resumed). mps: the runs share the GPU through a CUDA MPS
    server this call starts and stops (module docstring). stack=K: each group of K consecutive specs
    trains as one stack in one process (module docstring); max_parallel then counts processes."""
    from trainers.stack import check_stackable

    if not specs:
        raise UserError("multirun: no runs to launch")
    if stack < 1:
        raise UserError("multirun: stack must be >= 1")
    for spec in specs:
        if not resume and (spec.run_dir / "latest").exists():
            raise UserError(f"{spec.run_dir} already holds a checkpoint (latest/): pass resume, or another out root")
    groups = [specs[i:i + stack] for i in range(0, len(specs), stack)]
    for group in groups:
        if len(group) > 1:
            check_stackable([s.config for s in group])
    width = max_parallel or len(groups)
    if width < 1:
        raise UserError("multirun: max_parallel must be >= 1")
    env = _worker_env(min(width, len(groups)))
    daemon = start_mps() if mps else None
    try:
        if daemon is not None:
            env.update(daemon.env())
        return _run_all(groups, env, width, resume, time_limit_s, poll_s, daemon)
    finally:
        if daemon is not None:
            daemon.stop()


def _start(group: list[RunSpec], env: dict[str, str], resume: bool, time_limit_s: float | None,
           ) -> tuple[subprocess.Popen, Any]:
    """One worker process for a group of runs (one run, or one stack); its output goes to the first run's log."""
    for spec in group:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        spec.config.save_yaml(spec.run_dir / CONFIG_FILE)
        (spec.run_dir / RESULT_FILE).unlink(missing_ok=True)  # ours, from an earlier launch
    for spec in group[1:]:
        with open(spec.run_dir / LOG_FILE, "a") as note:
            note.write(f"trained in one stack with {', '.join(s.name for s in group if s is not spec)}; "
                       f"the output is in {group[0].run_dir / LOG_FILE}\n")
    cmd = [sys.executable, "-m", "trainers.multirun", "--worker", *(str(s.run_dir / CONFIG_FILE) for s in group)]
    if resume:
        cmd.append("--resume")
    if time_limit_s is not None:
        cmd += ["--time-limit-s", str(time_limit_s)]
    log = open(group[0].run_dir / LOG_FILE, "a")  # noqa: SIM115 (closed when the process ends)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log


def _run_all(groups: list[list[RunSpec]], env: dict[str, str], width: int, resume: bool,
             time_limit_s: float | None, poll_s: float, daemon: MpsDaemon | None) -> list[RunOutcome]:
    pending = list(groups)
    running: list[tuple[list[RunSpec], subprocess.Popen, float, Any]] = []
    outcomes: dict[str, RunOutcome] = {}
    served: set[str] = set()  # runs during which an MPS server was seen
    last_check = 0.0
    while pending or running:
        while pending and len(running) < width:
            group = pending.pop(0)
            proc, log = _start(group, env, resume, time_limit_s)
            running.append((group, proc, time.time(), log))
        if daemon is not None and running and time.time() - last_check > 1.0:
            last_check = time.time()
            if daemon.server_running():
                served.update(spec.name for group, *_ in running for spec in group)
        still = []
        for group, proc, started, log in running:
            code = proc.poll()
            if code is None:
                still.append((group, proc, started, log))
                continue
            log.close()
            tail = _tail(group[0].run_dir / LOG_FILE)
            for spec in group:
                result_path = spec.run_dir / RESULT_FILE
                result = json.loads(result_path.read_text()) if code == 0 and result_path.is_file() else None
                outcomes[spec.name] = RunOutcome(spec.name, spec.run_dir, code, time.time() - started, result, tail,
                                                 None if daemon is None else spec.name in served)
        running = still
        if running:
            time.sleep(poll_s)
    return [outcomes[s.name] for group in groups for s in group]


def run_worker(config_paths: list[str], resume: bool, time_limit_s: float | None) -> list[dict[str, Any]]:
    """One run, or several as one stack (trainers.stack), in this process: train, then write
    multirun_result.json into each run directory."""
    from trainers.stack import train_stack
    from trainers.train import train

    configs = [load_config(path) for path in config_paths]
    times: dict[str, float] = {"process_start": time.time()}

    def on_start(info: Any) -> None:
        times.setdefault("train_start", time.time())

    if len(configs) == 1:
        results = [train(configs[0], resume=resume, progress=False, on_start=on_start, time_limit_s=time_limit_s)]
    else:
        results = train_stack(configs, resume=resume, progress=False, on_start=on_start, time_limit_s=time_limit_s)
    end = time.time()
    summaries = []
    for result in results:
        summary = {
            "run_dir": str(result.run_dir), "steps": result.steps, "tokens_seen": result.tokens_seen,
            "val_loss": result.val_loss, "val_bpc": result.val_bpc, "best_val_loss": result.best_val_loss,
            "stopped_early": result.stopped_early, "elapsed_s": result.elapsed_s, "start_step": result.info.start_step,
            "tokens_per_step": result.info.tokens_per_step,
            "n_params_non_embedding": result.info.n_params_non_embedding, "device": result.info.device,
            "stacked_with": len(results), "process_start": times["process_start"],
            "train_start": times.get("train_start"), "end": end, "notes": result.info.notes,
        }
        (Path(result.run_dir) / RESULT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        summaries.append(summary)
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", help="presets or YAML files (one run per config and seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--set", action="append", default=[], help="override for every run: section.key=value")
    parser.add_argument("--out-root", default=None, help="each run goes to <out-root>/<config>-s<seed>")
    parser.add_argument("--resume", action="store_true", help="continue every run from its latest/")
    parser.add_argument("--max-parallel", type=int, default=None, help="processes at once (default: all)")
    parser.add_argument("--time-limit-s", type=float, default=None, help="each run stops at a checkpoint after this")
    parser.add_argument("--mps", action="store_true", help="share the GPU through a CUDA MPS server (started and "
                        "stopped here); refused where nvidia-cuda-mps-control is missing")
    parser.add_argument("--stack", type=int, default=1, help="train each K consecutive runs (same config, seeds "
                        "differ) as one stack in one process (trainers.stack; one device; compiled with "
                        "train.compile=true, modes without CUDA graphs)")
    parser.add_argument("--worker", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.worker:
            run_worker(args.worker, args.resume, args.time_limit_s)
            return 0
        if not args.configs or not args.out_root:
            raise UserError("multirun needs CONFIG... and --out-root")
        outcomes = launch(plan_runs(args.configs, args.set, args.seeds, args.out_root), resume=args.resume,
                          max_parallel=args.max_parallel, time_limit_s=args.time_limit_s, mps=args.mps,
                          stack=args.stack)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for o in outcomes:
        status = "ok" if o.ok else f"failed (exit {o.returncode}); log: {o.run_dir / LOG_FILE}"
        steps = o.result["steps"] if o.result else "-"
        mps_note = "" if o.mps_server_seen is None else f", MPS server seen: {o.mps_server_seen}"
        print(f"{o.name}: {status}, steps {steps}, {o.wall_s:.1f} s{mps_note}")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
