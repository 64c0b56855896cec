"""The entry-point modules import on their own, in a fresh interpreter (as a DAG file or the
triggerer would), so an import cycle hidden by the test session's import order still shows."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "airflow_provider_tokentier.operators",
    "airflow_provider_tokentier.sensors",
    "airflow_provider_tokentier.triggers.batch",
]


def test_entry_point_modules_import_standalone():
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-c", f"import {module}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in MODULES
    }
    failures = {}
    for module, proc in procs.items():
        _out, err = proc.communicate(timeout=180)
        if proc.returncode != 0:
            failures[module] = err.strip().splitlines()[-1]
    assert failures == {}
