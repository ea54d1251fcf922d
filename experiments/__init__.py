"""The paper's experiments: one runner per claim (python -m experiments.<claim>).

Run from the repository root, e.g. `python -m experiments.finetune --workdir=...`;
experiments/README.md lists the claims, commands and results.
"""
