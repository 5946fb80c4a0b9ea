"""The prepared GPU check in its CPU form: ``bash benchmarks/gpu_check.sh --smoke`` runs every part at toy sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_part(anime_dir, lite0_cache):
    """Every part reports a line (the plain loop against ours, the headline's batches, the precision and input-size
    variants, the stopped-and-resumed run of the GPU recipe with its generator), and RESULTS.md is left as it was."""
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_bytes()
    env = {**os.environ, "PYTHON": sys.executable, "GANXFER_DATA": str(anime_dir.parent)}
    res = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert {line["part"] for line in lines} == {"device", "plain", "batch", "precision", "resume"}
    assert [line["batch"] for line in lines if line["part"] == "batch"] == [8, 16]
    assert all(line["img_per_s"] > 0 for line in lines if line["part"] in ("batch", "precision"))
    variants = [line["variant"] for line in lines if line["part"] == "precision"]
    assert variants == ["fp32", "bf16", "bf16, NCHW", "bf16, D input 224 px"]
    resume = next(line for line in lines if line["part"] == "resume")
    assert (resume["first_exit"], resume["resumed_exit"]) == (130, 0) and resume["kimg"] > 0
    assert results.read_bytes() == before
