"""benchmarks/: the scripts behind every performance and accuracy figure in the README.

Run each from the repository root as a module, `python -m benchmarks.NAME [--help]`; they
import stemdl as installed and the helpers they share with the tests from `stemdl.testing`.
Figures go to `benchmarks/RESULTS.md` with the date and the machine.
"""
