"""The built-in scenarios; importing this package registers them."""

from vmdsim.check.scenarios import (  # noqa: F401
    aspm_walk,
    enable_race,
    hot_remove,
    live_move,
    seed_teardown,
    vmd_remove,
)
