"""The run's steps compiled for GPUs and TPUs that are not here (deviceless AOT).

  targets   the compile-only devices of each target, and the folder of their backends.
  programs  the train and eval steps compiled for a target: memory, largest batch, FLOPs,
            collectives, a roofline projection; the table of them in docs/targets.md.
  hlo       what the compiled HLO says: collectives by kind, mesh axis and size.
  __main__  `python -m alexnet_jax.aot --config=... --target=h100 --topology=1x1x2`.

Importing this package imports no JAX: the command puts the backends on the path first.
"""
