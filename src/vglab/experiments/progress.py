"""Progress of a sweep: what the runner reports while it trains and the reports are drawn.

The runner tells a progress object, in order:
1. `plan(plan)`: the estimated work per experiment (`runner.Plan`), before anything starts;
2. `start(title, groups)`: every group to train (`GroupPlan`: runs, units, estimated seconds);
3. per group: `group_started`, `unit_epoch` (the fraction of a unit's epochs done),
   `unit_done` (its runs are stored), `group_done`;
4. `reports(n)` and `report_done(name, seconds)` while pages are drawn.

`Tracker` turns these into counts and times (no display): a group's row counts *runs*
(stored / total), its bar fills with the fraction of its epochs trained, and every ETA
includes compiling. Before a group has trained two recorded epochs its remaining time is
the cost model's estimate (compile + train, scaled by how the finished groups compared
with their estimates) minus the time spent; after, the measured pace of its epochs. The
overall ETA is the remaining time of every group, spread over the workers.

Displays: `RichProgress` (bars, for a terminal), `PlainProgress` (one line per finished
group and per report, for a log file) and `NoProgress` (quiet). `for_stream` picks the
first two by whether the stream is a terminal.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


CALIBRATION = (0.25, 4.0)  # the cost model is within about 2x (runner.py); more is noise


@dataclass(frozen=True)
class GroupPlan:
    """A group of runs as the runner will train it."""

    key: str  # "<experiment>/<group>"
    runs: int
    units: int
    estimate_s: float  # cost model: compile + train, one core


@dataclass
class _Group:
    plan: GroupPlan
    fractions: dict = field(default_factory=dict)  # unit id -> fraction of its epochs done
    runs_done: int = 0
    started: float | None = None
    finished: float | None = None
    paced_from: tuple[float, float] | None = None  # (time, fraction) of the first epoch after compiling

    @property
    def fraction(self) -> float:
        if self.finished is not None:
            return 1.0
        return sum(self.fractions.values()) / max(self.plan.units, 1)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Tracker:
    """Counts and time estimates of a sweep (see the module docstring)."""

    def __init__(self, workers: int = 1, clock=time.monotonic):
        self.workers = max(1, workers)
        self.clock = clock
        self.groups: dict[str, _Group] = {}
        self.t0 = clock()

    def add(self, plan: GroupPlan) -> None:
        self.groups.setdefault(plan.key, _Group(plan))

    def started(self, key: str, ago: float = 0.0) -> None:
        """Group `key` started `ago` seconds before now (Ray: a task's events all arrive
        at its end, with the seconds it ran)."""
        g = self.groups[key]
        if g.started is None:
            g.started = self.clock() - ago

    def unit_epoch(self, key: str, unit: str, fraction: float) -> None:
        g = self.groups[key]
        self.started(key)
        g.fractions[unit] = max(g.fractions.get(unit, 0.0), min(max(fraction, 0.0), 1.0))
        if g.paced_from is None and fraction > 0:
            g.paced_from = (self.clock(), g.fraction)  # compiled by now: pace from here

    def unit_done(self, key: str, unit: str, runs: int) -> None:
        g = self.groups[key]
        g.fractions[unit] = 1.0
        g.runs_done += runs

    def done(self, key: str) -> None:
        g = self.groups[key]
        self.started(key)
        g.fractions = {u: 1.0 for u in g.fractions}
        g.finished = self.clock()

    def calibration(self) -> float:
        """Measured / estimated seconds over the finished groups (1 before any), kept within
        CALIBRATION: a few short groups say little about the long ones."""
        est = sum(g.plan.estimate_s for g in self.groups.values() if g.finished is not None)
        took = sum(g.finished - g.started for g in self.groups.values() if g.finished is not None)
        lo, hi = CALIBRATION
        return min(max(took / est, lo), hi) if est > 0 and took > 0 else 1.0

    def remaining(self, key: str) -> float:
        g = self.groups[key]
        if g.finished is not None:
            return 0.0
        now = self.clock()
        estimate = g.plan.estimate_s * self.calibration()
        if g.started is None:
            return estimate
        if g.paced_from is not None:
            t1, f1 = g.paced_from
            if g.fraction > f1 and now > t1:
                return (now - t1) / (g.fraction - f1) * (1.0 - g.fraction)
        return max(estimate - (now - g.started), 0.1 * estimate)

    def seconds(self, key: str) -> float | None:
        """How long a finished group took."""
        g = self.groups[key]
        return None if g.finished is None or g.started is None else g.finished - g.started

    def eta(self) -> float:
        return sum(self.remaining(k) for k in self.groups) / self.workers

    def fraction(self) -> float:
        """The share of the estimated work done."""
        total = sum(g.plan.estimate_s for g in self.groups.values()) or 1.0
        return sum(g.plan.estimate_s * g.fraction for g in self.groups.values()) / total

    def runs(self) -> tuple[int, int]:
        return sum(g.runs_done for g in self.groups.values()), sum(g.plan.runs for g in self.groups.values())

    def groups_done(self) -> tuple[int, int]:
        return sum(g.finished is not None for g in self.groups.values()), len(self.groups)


# ------------------------------------------------------------------ displays
class NoProgress:
    """Shows nothing. The runner's calls, in order: plan, start, then per group
    group_started / unit_epoch / unit_done / group_done; reports / report_done."""

    def __init__(self, workers: int = 1):
        self.tracker = Tracker(workers)
        self._depth = 0

    def __enter__(self):
        self._depth += 1
        if self._depth == 1:
            self._open()
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._close()
        return False

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def plan(self, plan) -> None:
        pass

    def start(self, title: str, groups: list[GroupPlan], workers: int = 1) -> None:
        self.tracker.workers = max(1, workers)
        for g in groups:
            self.tracker.add(g)

    def group_started(self, key: str, ago: float = 0.0) -> None:
        self.tracker.started(key, ago)

    def unit_epoch(self, key: str, unit: str, fraction: float) -> None:
        self.tracker.unit_epoch(key, unit, fraction)

    def unit_done(self, key: str, unit: str, runs: int) -> None:
        self.tracker.unit_done(key, unit, runs)

    def group_done(self, key: str) -> None:
        self.tracker.done(key)

    def reports(self, n: int) -> None:
        pass

    def report_done(self, name: str, seconds: float | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class PlainProgress(NoProgress):
    """Plain lines for a log file: the plan, one line per finished group and per report."""

    def __init__(self, stream=None, workers: int = 1):
        super().__init__(workers)
        self.stream = stream if stream is not None else sys.stderr
        self._reports = [0, 0]

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def plan(self, plan) -> None:
        for line in plan.lines():
            self._print(line)

    def start(self, title: str, groups: list[GroupPlan], workers: int = 1) -> None:
        super().start(title, groups, workers)
        self._print(f"training {title} (ETA {_clock(self.tracker.eta())}, compiling included)")

    def group_done(self, key: str) -> None:
        super().group_done(key)
        t = self.tracker
        g = t.groups[key]
        done, total = t.groups_done()
        runs_done, runs = t.runs()
        self._print(f"[{done}/{total} groups] {key}: {g.plan.runs} run{'s' if g.plan.runs != 1 else ''} in "
                    f"{t.seconds(key):.1f} s · {runs_done}/{runs} runs · {t.fraction():.0%} of the work · "
                    f"ETA {_clock(t.eta())}")

    def reports(self, n: int) -> None:
        self._reports[1] = n
        if n > self._reports[0]:
            self._print(f"writing {n - self._reports[0]} report{'s' if n - self._reports[0] != 1 else ''}…")

    def report_done(self, name: str, seconds: float | None = None) -> None:
        self._reports[0] += 1
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        self._print(f"[{self._reports[0]}/{self._reports[1]} reports] {name}{took}")

    def log(self, message: str) -> None:
        self._print(message)


class RichProgress(NoProgress):
    """Rich bars on stderr: one row per group (runs stored / total, then its time when
    done, else its ETA), one overall row and, while pages are drawn, one for the reports."""

    def __init__(self, console=None, workers: int = 1):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

        super().__init__(workers)
        self.console = console or Console(stderr=True)
        tracker = self.tracker

        class _Time(TextColumn):
            """ETA while a row runs (compiling included), its time once done."""

            def __init__(self):
                super().__init__("")

            def render(self, task):
                from rich.text import Text

                key = task.fields.get("key")
                if key == "__overall__":
                    return Text(f"ETA {_clock(tracker.eta())}" if not task.finished else
                                f"done in {_clock(task.finished_time)}")
                if key in tracker.groups:
                    took = tracker.seconds(key)
                    if took is not None:
                        return Text(f"done in {_clock(took)}", style="green")
                    return Text(f"ETA {_clock(tracker.remaining(key))}")
                return Text(_clock(task.elapsed) if task.finished else "")

        self._bars = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                              BarColumn(bar_width=28), TextColumn("{task.fields[count]}"), _Time(),
                              console=self.console, transient=False)
        self._ids: dict[str, int] = {}
        self._overall = None
        self._report_row = None
        self._reports = [0, 0]

    def _open(self) -> None:
        self._bars.start()

    def _close(self) -> None:
        self._bars.stop()

    def plan(self, plan) -> None:
        for line in plan.lines():
            self.console.print(line, highlight=False, soft_wrap=True)

    def start(self, title: str, groups: list[GroupPlan], workers: int = 1) -> None:
        super().start(title, groups, workers)
        runs = sum(g.runs for g in groups)
        self._overall = self._bars.add_task(f"[bold]{title}", total=1000, count=f"0/{runs} runs", key="__overall__")

    def _update_overall(self) -> None:
        if self._overall is not None:
            done, total = self.tracker.runs()
            self._bars.update(self._overall, completed=int(1000 * self.tracker.fraction()), count=f"{done}/{total} runs")

    def group_started(self, key: str, ago: float = 0.0) -> None:
        super().group_started(key, ago)
        if key not in self._ids:
            g = self.tracker.groups[key]
            self._ids[key] = self._bars.add_task(f"  {key}", total=1000, count=f"0/{g.plan.runs} runs", key=key)

    def unit_epoch(self, key: str, unit: str, fraction: float) -> None:
        super().unit_epoch(key, unit, fraction)
        self.group_started(key)
        self._bars.update(self._ids[key], completed=int(1000 * self.tracker.groups[key].fraction))
        self._update_overall()

    def unit_done(self, key: str, unit: str, runs: int) -> None:
        super().unit_done(key, unit, runs)
        self.group_started(key)
        g = self.tracker.groups[key]
        self._bars.update(self._ids[key], completed=int(1000 * g.fraction), count=f"{g.runs_done}/{g.plan.runs} runs")
        self._update_overall()

    def group_done(self, key: str) -> None:
        super().group_done(key)
        self.group_started(key)
        self._bars.update(self._ids[key], completed=1000)
        self._update_overall()

    def reports(self, n: int) -> None:
        self._reports[1] = n
        left = n - self._reports[0]
        if self._report_row is None:
            self._report_row = self._bars.add_task("", total=max(n, 1), count="", key="__reports__")
        self._bars.update(self._report_row, total=max(n, 1), completed=self._reports[0],
                          description=f"writing {left} report{'s' if left != 1 else ''}…", count=f"{self._reports[0]}/{n}")

    def report_done(self, name: str, seconds: float | None = None) -> None:
        self._reports[0] += 1
        n = self._reports[1]
        left = n - self._reports[0]
        if self._report_row is not None:
            text = f"writing {left} report{'s' if left != 1 else ''}…" if left else f"{n} reports written"
            self._bars.update(self._report_row, completed=self._reports[0], description=text,
                              count=f"{self._reports[0]}/{n}")

    def log(self, message: str) -> None:
        self._bars.console.print(message)


def for_stream(show: bool = True, console=None, workers: int = 1):
    """Bars on a terminal, plain lines otherwise (a log file, a pipe), nothing when not `show`."""
    if not show:
        return NoProgress(workers)
    from rich.console import Console

    console = console or Console(stderr=True)
    if console.is_terminal:
        return RichProgress(console, workers)
    return PlainProgress(console.file, workers)
