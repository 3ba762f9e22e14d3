"""The commit a benchmark ran on, and whether the working tree had uncommitted changes: taken
when the run starts, so a result can be traced to the exact code that produced it."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stamp() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain")),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_average": list(os.getloadavg()),
            # the threads this process runs torch with, when it runs torch (take the stamp after setting them)
            "torch_threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None}
