"""Readers of runs: what a notebook and the results table need. Training never imports these.

  inspection  `load_run`, `preprocess` / `deprocess`, `activations`, `exchanges`: a run's
              network in a notebook.
  figures     the paper's figures of a run (curves, kernels, predictions, neighbours).
  report      `python -m alexnet_jax.analysis.report RUN...`: each run beside the paper's number.
"""
