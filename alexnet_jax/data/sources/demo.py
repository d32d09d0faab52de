"""'demo': the synthetic offline dataset of `alexnet_jax.data.demo_dataset`, through TFDS."""

from alexnet_jax.data.sources.tfds_source import TfdsSource


class DemoSource(TfdsSource):

  @classmethod
  def builder(cls, spec):
    from alexnet_jax.data import demo_dataset  # pylint: disable=g-import-not-at-top
    return demo_dataset.DemoShapes(data_dir=spec.data_dir)
