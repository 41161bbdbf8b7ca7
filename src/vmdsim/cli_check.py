"""``vmdsim check``, ``vmdsim replay`` and ``vmdsim scenarios``: the explorer's commands.

A replay token names the scenario, its options and the schedule, so it is
all ``vmdsim replay`` needs:
``seed-teardown[protocol=rfc-v3,desc_free=immediate]:teardown*5,irq34@cpu1,...``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from vmdsim.check.dpor import Stats
from vmdsim.check.explore import STRATEGIES, Report, explore
from vmdsim.check.program import Execution, Program, SetupError
from vmdsim.check.scenario import ScenarioError, builtin, find
from vmdsim.cli_history import (
    ERA,
    KERNEL,
    UNCOUNTED,
    VARIANT,
    announce_variants,
    apply_token_settings,
)

if TYPE_CHECKING:
    from vmdsim.history.eras import Era

_TOKEN = re.compile(r"^(?P<name>[^\[:]+)(\[(?P<opts>[^\]]*)\])?:(?P<schedule>.+)$")


def token(name: str, options: dict[str, str], schedule: str) -> str:
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return f"{name}[{opts}]:{schedule}" if opts else f"{name}:{schedule}"


def parse_token(text: str) -> tuple[str, dict[str, str], str]:
    m = _TOKEN.match(text.strip())
    if not m:
        raise ScenarioError(f"replay token {text!r} is not SCENARIO[OPT=VALUE,...]:SCHEDULE")
    opts: dict[str, str] = {}
    for part in filter(None, (m.group("opts") or "").split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise ScenarioError(f"replay token: option {part!r} is not OPT=VALUE")
        opts[key] = value
    return m.group("name"), opts, m.group("schedule")


# Budgets of one execution (``Program.spin_limit``, ``Program.max_steps``): options of
# every scenario, written into replay tokens because a livelock verdict depends on them.
BUDGETS = ("spin_limit", "max_steps")
MAX_BUDGET = 10**7
# Settings of every execution, not options of the scenario: the budgets, the lock
# validator (``lockdep=on``), the variants applied (``variant=a.py;before:NAME``) and
# the release (``kernel=4.5``: its code before later fixes; its options are written as
# the scenario's), each written into replay tokens, as verdicts depend on them.
EXECUTION_SETTINGS = (*BUDGETS, "lockdep", "variant", "kernel")


def _program(name: str, options: dict[str, str]) -> Program:
    """The scenario's program with ``options``, the execution settings among them applied."""
    chosen = {k: v for k, v in options.items() if k not in EXECUTION_SETTINGS}
    program = find(name).program(**chosen)
    if "lockdep" in options:
        if options["lockdep"] != "on":
            raise ScenarioError(f"lockdep {options['lockdep']!r}: the only value is on")
        program.lockdep = True
    for key in BUDGETS:
        if key in options:
            value = options[key]
            if not value.isdigit() or not 0 < int(value) <= MAX_BUDGET:
                raise ScenarioError(f"{key.replace('_', '-')} {value!r}: a number of steps "
                                    f"from 1 to {MAX_BUDGET}")
            setattr(program, key, int(value))
    return program


def _options(opt: tuple[str, ...], **named: str | None) -> dict[str, str]:
    out = {k: v for k, v in named.items() if v is not None}
    for item in opt:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ScenarioError(f"--opt {item!r}: write it as NAME=VALUE")
        out[key.replace("-", "_")] = value
    return out


def _print_report(r: Report, name: str, options: dict[str, str], as_json: bool,
                  full: bool = False) -> None:
    replay_token = token(name, options, r.schedule) if r.schedule else ""
    if as_json:
        d = r.as_dict()
        d.update(options=options, replay=replay_token, counterexample=r.drawing(full))
        click.echo(json.dumps(d, indent=2))
        return
    opts = " ".join(f"{k}={v}" for k, v in options.items())
    click.echo(f"scenario {r.program} {opts}".rstrip())
    click.echo(f"verdict: {r.verdict}" + (f" (checked: {r.bound})" if r.verdict == "safe"
                                          else ""))
    s = r.stats
    cut = f"{s.cut} cut at the bound, " if s.cut else ""
    click.echo(f"explored: {s.executions} executions, {s.blocked} sleep-set blocked, {cut}"
               f"{s.steps} steps, {s.races} races reversed, {r.seconds:.2f} s "
               f"[{r.strategy}]")
    if r.counterexample is not None:
        click.echo("")
        click.echo(r.drawing(full))
        click.echo("")
        click.echo(f"replay: vmdsim replay '{replay_token}'")


def _era_scenario_options(name: str, era: Era, given: dict[str, str]) -> dict[str, str]:
    """The scenario's options as the --kernel release runs them. A release option the
    scenario has no option for is fine when the scenario's world runs it already (it runs
    today's); otherwise the scenario cannot say what that release does: an error."""
    from vmdsim.history.eras import TODAY, EraError, merge_options

    options = find(name).options
    merged = merge_options(era, given)
    out = {}
    for key, value in merged.items():
        if key in options:
            out[key] = value
        elif key in given:
            out[key] = value  # the scenario refuses it by name, as without --kernel
        elif TODAY.get(key) != value:
            raise EraError(f"scenario {name} has no option {key.replace('_', '-')}, so it "
                           f"cannot run as --kernel {era.name} ({key.replace('_', '-')} "
                           f"{value}; the scenario runs {TODAY.get(key)}); its own options "
                           "choose the parts of that release it has (see `vmdsim "
                           "scenarios`)")
    return out


def _variant_setting(variants: tuple[str, ...]) -> str:
    """The ``variant=`` setting of a replay token: the specs joined by ``;``."""
    for v in variants:
        if any(c in v for c in ",;[]"):
            raise ScenarioError(f"--variant {v!r}: a replay token cannot hold a name with "
                                "',', ';', '[' or ']'; rename the file")
    return ";".join(variants)


CHECK_FLAGS = ("protocol", "desc_free", "policy")  # scenario options check has a flag for


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("scenario")
    @click.option("--protocol", help="teardown protocol of the VMD demux (rfc-v3, kfree-rcu, "
                  "synchronize-rcu, srcu, spinlock)")
    @click.option("--desc-free", "desc_free", help="IRQ descriptor freeing: immediate or rcu")
    @click.option("--policy", help="vector-assignment policy")
    @click.option("--opt", "opt", multiple=True, metavar="NAME=VALUE",
                  help="any other scenario option")
    @click.option("--strategy", type=click.Choice(STRATEGIES), default="dpor", show_default=True)
    @click.option("--bound", default=2, show_default=True, help="preemption bound (bounded)")
    @click.option("--runs", default=500, show_default=True, help="executions (pct)")
    @click.option("--depth", default=2, show_default=True, help="bug depth (pct)")
    @click.option("--seed", default=0, show_default=True, help="random seed (pct)")
    @click.option("--jobs", default=1, show_default=True, help="processes to explore with")
    @click.option("--spin-limit", "spin_limit", type=click.IntRange(1, MAX_BUDGET),
                  help="repeated read-only steps before a context counts as spinning "
                       "[default: 100]")
    @click.option("--max-steps", "max_steps", type=click.IntRange(1, MAX_BUDGET),
                  help="steps of one execution before it is a livelock [default: 200000]")
    @click.option("--lockdep", is_flag=True,
                  help="validate lock order on every execution (possible deadlocks)")
    @click.option("--no-reduce", is_flag=True, help="dpor: turn partial-order reduction off")
    @click.option("--full", is_flag=True, help="draw every step, not just the racing ones")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    @VARIANT
    @KERNEL
    def check(scenario: str, protocol: str | None, desc_free: str | None, policy: str | None,
              opt: tuple[str, ...], strategy: str, bound: int, runs: int, depth: int,
              seed: int, jobs: int, spin_limit: int | None, max_steps: int | None,
              lockdep: bool, no_reduce: bool, full: bool, as_json: bool,
              variants: tuple[str, ...], kernel: str | None) -> None:
        """Explore SCENARIO (a name from `vmdsim scenarios`, or a .py file) for races."""
        budgets = {k: str(v) for k, v in (("spin_limit", spin_limit), ("max_steps", max_steps))
                   if v is not None}
        options = _options(opt, protocol=protocol, desc_free=desc_free, policy=policy)
        era = click.get_current_context().meta.get(ERA)
        if era is not None:
            options = _era_scenario_options(scenario, era, options)
            options["kernel"] = era.name  # its code before later fixes, on replay too
        options.update(budgets)
        if lockdep:
            options["lockdep"] = "on"  # in the replay token: the verdict depends on it
        if variants:
            options["variant"] = _variant_setting(variants)
        program = _program(scenario, options)
        progress, done = _progress(as_json)
        if jobs > 1:  # the executions run in forked processes: their calls are not counted
            click.get_current_context().find_root().meta[UNCOUNTED] = True
        try:
            r = explore(program, strategy, bound=bound, runs=runs, depth=depth, seed=seed,
                        jobs=jobs, reduce=not no_reduce, progress=progress)
        except SetupError as e:
            if scenario.endswith(".py") and not str(e).startswith(scenario):
                raise SetupError(f"{scenario}: {e}") from None  # which file said so
            raise
        finally:
            done()
        announce_variants()
        _print_report(r, scenario, options, as_json, full)
        if r.verdict != "safe":
            sys.exit(1)  # a schedule fails: as a test would, so scripts and CI can tell

    @main.command()
    @click.argument("replay_token", metavar="TOKEN")
    @click.option("--full", is_flag=True, help="draw every step, not just the racing ones")
    @click.option("--json", "as_json", is_flag=True, help="machine-readable output")
    def replay(replay_token: str, full: bool, as_json: bool) -> None:
        """Re-run one schedule printed by `vmdsim check` and draw it."""
        from vmdsim.check.render import render
        from vmdsim.check.schedule import ScheduleError
        from vmdsim.check.schedule import replay as run_schedule

        name, options, schedule = parse_token(replay_token)
        apply_token_settings(options)  # the release and variants it was found on
        try:
            ex = run_schedule(_program(name, options), schedule)
        except ScheduleError as e:
            raise ScheduleError(f"replay token of {name}: {e}") from None
        if as_json:
            click.echo(json.dumps({"scenario": name, "options": options, "verdict": ex.verdict,
                                   "message": str(ex.failure or ""), "steps": len(ex.trace),
                                   "counterexample": render(ex, full)}, indent=2))
            return
        click.echo(f"verdict: {ex.verdict}")
        click.echo(render(ex, full))

    @main.command()
    def scenarios() -> None:
        """The built-in scenarios, their options and their known verdicts."""
        for sc in sorted(builtin().values(), key=lambda s: s.name):
            click.echo(f"{sc.name}: {sc.summary}")
            for opt, values in sc.options.items():
                flag = (f"--{opt.replace('_', '-')}" if opt in CHECK_FLAGS
                        else f"--opt {opt}=")  # check has flags for these; --opt for others
                click.echo(f"    {flag}: {', '.join(values)}")
            for combo in sc.combinations():
                want = sc.expected(combo)
                if want:
                    opts = " ".join(f"{k}={v}" for k, v in combo.items())
                    click.echo(f"    {opts or '(default)'} -> {want}")


def _progress(quiet: bool) -> tuple[Callable[[Execution, Stats], None] | None,
                                   Callable[[], None]]:
    """A live count of executions on a terminal; nothing otherwise."""
    if quiet or not sys.stderr.isatty():
        return None, lambda: None
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   transient=True)
    task = bar.add_task("exploring: 0 executions")
    bar.start()
    count = [0]

    def tick(ex: Execution, stats: Stats) -> None:
        count[0] += 1
        if count[0] % 25 == 0:
            about = (f" of about {stats.estimate:,.0f} (estimated; low early on)"
                     if stats.estimate else "")
            bar.update(task, description=f"exploring: {count[0]} executions{about}")

    return tick, bar.stop
