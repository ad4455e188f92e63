"""Provenance of a result: what machine it ran on and which command started it (benchmarks, analyses, the demo)."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def describe_machine(device: torch.device | None = None) -> dict:
    """CPU, cores, memory, accelerator and library versions of this machine."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        # the vector extension PyTorch's CPU kernels use (AVX2, AVX512): bf16 is fast only with native support
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(_memory_gb() or 0, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


_CLI_ARGV: list[str] | None = None


def set_cli_argv(argv: list[str]) -> None:
    """Record the arguments the `usema` command was called with (the CLI calls this)."""
    global _CLI_ARGV
    _CLI_ARGV = list(argv)


def command_line() -> str:
    """The command that is running, as a user would type it."""
    if _CLI_ARGV is not None:
        return " ".join(shlex.quote(a) for a in ["usema", *_CLI_ARGV])
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def git_commit(source: str | Path | None = None) -> str:
    """The git commit of the code that runs (the checkout holding this package, or `source`), with "+dirty"
    where tracked files in that folder differ from it; "unknown" outside a git checkout (an installed wheel).
    Only the code's folder counts: a study rewriting its tracked result files does not make its runs' code dirty."""
    folder = Path(source) if source is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(device: torch.device | None = None) -> dict:
    """Command, machine, time and git commit, to store with a result."""
    return {
        "command": command_line(),
        "machine": describe_machine(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
    }


def provenance_markdown(prov: dict) -> str:
    """The provenance as Markdown lines for a results file."""
    machine = prov["machine"]
    commit = f"  \nCommit: {prov['commit']}" if prov.get("commit") else ""
    if "description" in machine:  # provenance read back from an earlier report
        return f"Command: `{prov['command']}`  \nMachine: {machine['description']}  \nDate: {prov['date']}{commit}\n"
    cpu = machine["cpu"] + (f" ({machine['cpu_capability']})" if machine.get("cpu_capability") else "")
    threads = f" ({machine['torch_threads']} used by torch)" if machine.get("torch_threads") else ""
    parts = [f"{cpu}, {machine['cores']} cores{threads}, {machine['memory_gb']} GiB"]
    if "gpu" in machine:
        parts.append(machine["gpu"])
    parts.append(f"Python {machine['python']}, torch {machine['torch']}")
    return f"Command: `{prov['command']}`  \nMachine: {'; '.join(parts)}  \nDate: {prov['date']}{commit}\n"


def provenance_from_markdown(text: str) -> dict:
    """The command, machine and date of a report written by `provenance_markdown` (for results made before
    their provenance was also kept as JSON)."""
    found = {}
    for key, pattern in (("command", r"^Command: `(.*)`"), ("machine", r"^Machine: (.*?)\s*$"),
                         ("date", r"^Date: (.*?)\s*$")):
        match = re.search(pattern, text, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {key.capitalize()}: line in the report")
        found[key] = match.group(1)
    prov = {"command": found["command"], "date": found["date"], "machine": {"description": found["machine"]}}
    commit = re.search(r"^Commit: (\S+)", text, re.MULTILINE)
    if commit:
        prov["commit"] = commit.group(1)
    return prov
