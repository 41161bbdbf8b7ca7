"""The driver core's pieces the model needs (``drivers/base/``): ``struct device``
(:mod:`~vmdsim.kernel.base.core`), managed resources (:mod:`~vmdsim.kernel.base.devres`)
and binding devices to drivers on any bus (:mod:`~vmdsim.kernel.base.dd`)."""
