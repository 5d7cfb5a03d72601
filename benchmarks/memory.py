"""Peak resident memory of this process, for the benchmarks that compare a lock step with a fine-tuning step
(Linux: /proc/self/status; writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS)."""

from pathlib import Path


def status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
