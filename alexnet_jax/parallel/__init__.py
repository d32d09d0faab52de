"""The network on devices: the ('data', 'model') mesh and everything that depends on it.

  layout       `Layout`: the mesh, the shardings, the mapped network and loss (Sec. 3.2's
               two columns exchanging activations through `jax.lax` collectives).
  pmap_mapper  the same per-device code under `jax.pmap` (config.mesh.mapper='pmap').
  compiler     XLA options per platform, and `jit` with them.
  distributed  joining a multi-process run; work that process 0 does once for all.
"""

from alexnet_jax.parallel.layout import (AUTO, AXES, MAPPERS, Layout, MeshSpec, apply, make_mesh,
                                         mesh_config, model_axis)

__all__ = ['AUTO', 'AXES', 'MAPPERS', 'Layout', 'MeshSpec', 'apply', 'make_mesh', 'mesh_config',
           'model_axis']
