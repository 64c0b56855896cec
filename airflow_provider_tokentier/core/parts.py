"""Defaults for progress part objects (see :mod:`airflow_provider_tokentier.state.parts`).

Kept free of Airflow imports so the provider info can show them without importing the SDK.
"""

from __future__ import annotations

#: Default rows per part object (``[tokentier] progress_part_rows``): at most this many finished
#: rows are paid again when a worker dies mid-run.
DEFAULT_PART_ROWS = 1000
#: Default seconds a finished row waits before its part is written anyway
#: (``[tokentier] progress_part_seconds``).
DEFAULT_PART_SECONDS = 60.0
