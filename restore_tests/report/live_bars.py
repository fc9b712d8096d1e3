"""The progress on a terminal: one rich Progress, a bar per running scenario (progress.py
imports it only when the display is a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from restore_tests.report.progress import REFRESHES_PER_SECOND, Display, Transfer


class LiveBars(Display):
    """One rich Progress on a terminal, a bar per running scenario, removed at its verdict."""

    def __init__(self, console: Console, started: float, redirect_stdout: bool = False) -> None:
        super().__init__(started)
        self.progress = Progress(
            TextColumn("{task.fields[scenario]}", style="bold"),
            BarColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
            redirect_stdout=redirect_stdout,  # verdict lines printed above the bars
            refresh_per_second=REFRESHES_PER_SECOND,
        )
        self.tasks: dict[str, TaskID] = {}

    def step(self, scenario: str, message: str) -> None:
        with self.lock:
            self.progress.update(self._task(scenario), description=message)

    def show(self, scenario: str, transfer: Transfer) -> None:
        self.progress.update(
            self._task(scenario),
            total=transfer.latest.total_bytes,
            completed=transfer.latest.done_bytes,
            description=f"restored {transfer.describe()}",
        )

    def finished(self, scenario: str) -> None:
        super().finished(scenario)
        with self.lock:
            task = self.tasks.pop(scenario, None)
            if task is not None:
                self.progress.remove_task(task)
                self.progress.refresh()  # gone before the verdict is printed above the bars

    def _task(self, scenario: str) -> TaskID:
        if scenario not in self.tasks:
            self.tasks[scenario] = self.progress.add_task("", total=None, scenario=scenario)
        return self.tasks[scenario]
