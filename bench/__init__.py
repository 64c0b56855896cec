"""tokentier benchmarks: ours beside the anchors, measured in the same run.

Run everything with ``python -m bench`` (see BENCHMARKS.md for the exact command), or one
benchmark with ``python -m bench.triggers`` / ``bench.submit`` / ``bench.landing``. Every
contender runs in a fresh child process, and the emulator in another, so the figures of one
never include the CPU or memory of another.
"""
