"""atheris fuzz targets (``python3 fuzz/fuzz_<name>.py -runs=N``) and their shared harness.

The package is importable from the repository root so that ``tests/test_fuzz_regressions.py``
replays saved inputs through exactly the code the fuzzer runs.
"""
