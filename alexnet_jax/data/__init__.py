"""The data side: Sec. 2 preprocessing and Sec. 4.1 augmentation fed to the train step.

One module per concern, each importing only those above it in this list:
  spec        `DataSpec`: `config.data` parsed and validated once, with defaults.
  identity    `DatasetIdentity`: which data a derived file (statistics, copy) came from.
  decode      encoded image -> the stored 256x256 image of Sec. 2.
  sources/    undecoded examples of each dataset (a registry: one file plus one line per
              source), the prepared copy (reader and writer), and derived-file paths.
  statistics  the mean image and RGB PCA of the training split: compute, write, read.
  augment     Sec. 4.1 on the host: one function per operation, and the eval views.
  device_augment  the same operations in JAX, inside the jitted steps
              (`config.data.augment_on='device'`).
  batches     `Batches`: a pipeline's iterator, closed explicitly (its threads end).
  pipeline    `train_batches`, `eval_batches(split=...)`, `device_batches`; resuming is
              `train_batches(start_step=...)`.
  checks      before a run reads: data paths, the one build per run, the statistics.
  demo_dataset  the offline synthetic dataset of the demo (a TFDS builder).
Commands: `python -m alexnet_jax.data.build` (the dataset and its statistics, once),
`python -m alexnet_jax.data.statistics`, `python -m alexnet_jax.data.prepare` (a 256x256 copy).
"""
