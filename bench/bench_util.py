"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import json
import platform


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def emit(report: dict, out_path: str = None) -> None:
    """Prints the report as JSON and, if asked, writes it to out_path."""
    text = json.dumps(report, indent=1)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text + "\n")
