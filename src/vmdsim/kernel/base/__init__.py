"""The driver core's pieces the model needs (``drivers/base/``): ``struct device``
(:mod:`~vmdsim.kernel.base.core`) and managed resources (:mod:`~vmdsim.kernel.base.devres`)."""
