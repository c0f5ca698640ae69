"""Progress display for the runner: one Rich bar per group (with its ETA) and one overall.

The runner counts *steps*: one per member-unit epoch, epoch 0 (the measurement at
initialization) included, so a group's bar moves while it trains and its ETA comes from
its own speed. A group's first steps include compiling its program (seconds), which
the ETA learns from too. `NoProgress` is the quiet variant.
"""

from __future__ import annotations


class NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, title: str, total: int) -> None:
        pass

    def add_group(self, key: str, description: str, total: int) -> None:
        pass

    def advance(self, key: str, steps: int = 1) -> None:
        pass

    def group_done(self, key: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class RichProgress(NoProgress):
    """Rich bars on stderr: groups appear when a worker starts them and stay, ticked, when done."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.console = console or Console(stderr=True)
        self._bars = Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                              BarColumn(bar_width=28), MofNCompleteColumn(), TimeElapsedColumn(),
                              TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False)
        self._ids: dict[str, int] = {}
        self._overall = None

    def __enter__(self):
        self._bars.start()
        return self

    def __exit__(self, *exc):
        self._bars.stop()
        return False

    def start(self, title: str, total: int) -> None:
        self._overall = self._bars.add_task(f"[bold]{title}", total=max(total, 1))

    def add_group(self, key: str, description: str, total: int) -> None:
        if key not in self._ids:
            self._ids[key] = self._bars.add_task(f"  {description}", total=max(total, 1))

    def advance(self, key: str, steps: int = 1) -> None:
        if key in self._ids:
            self._bars.advance(self._ids[key], steps)
        if self._overall is not None:
            self._bars.advance(self._overall, steps)

    def group_done(self, key: str) -> None:
        if key in self._ids:  # fill the bar (and the overall one) up to the group's total
            task = next(t for t in self._bars.tasks if t.id == self._ids[key])
            self.advance(key, max(0, int(task.total - task.completed)))

    def log(self, message: str) -> None:
        self._bars.console.print(message)
