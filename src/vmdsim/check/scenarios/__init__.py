"""The built-in scenarios; importing this package registers them."""

from vmdsim.check.scenarios import enable_race, live_move, seed_teardown  # noqa: F401
