"""The GPU benchmark script, small on the CPU: a lent GPU machine gives it one run, so it
must not break between sessions (benchmarks/gpu_reproduce.py --small)."""

import subprocess
import sys
from pathlib import Path

from experiments_helpers import vglab_cache  # noqa: F401

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_reproduce_runs_every_stage_small_on_the_cpu(tmp_path, vglab_cache):
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_reproduce.py"), "--small", "--presets", "large-params",
                           "--budget", "400", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("agree", "study", "curve"):
        assert f"== stage {stage}: " in out and out.split(f"== stage {stage}: ")[1].split("\n")[0].endswith("exit 0"), out
    assert "reproduce --dataset digits, 1 presets on cpu" in out and "large-params-slow" in out
    curve = out.split("group-size curve")[1].splitlines()[2:]
    assert [int(line.split()[0]) for line in curve if line.strip()[:1].isdigit()] == [1, 2]
    assert (tmp_path / "out" / "large-params" / "report.html").exists()
