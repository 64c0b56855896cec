"""Pure-Python core of tokentier: request validation, chunking, pricing and the result-row contract.

Nothing here imports Airflow or a provider SDK, so it is safe to use anywhere (workers,
triggerer, emulator, tests).
"""
