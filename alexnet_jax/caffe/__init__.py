"""Caffe's bvlc_alexnet weights into this project's parameter layout.

  proto    a dependency-free reader of Caffe's binary .caffemodel (protobuf) files.
  convert  `python -m alexnet_jax.caffe.convert --caffemodel=... --output=DIR`.
"""
