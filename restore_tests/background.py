"""A call run in a thread while the caller goes on (a restic listing while the tool loads, a
sandbox while the source selects, a count in the sandbox while the host hashes)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Background(Generic[T]):
    """call() in a daemon thread; result() waits for it, then returns what it returned or
    raises what it raised (in the waiting thread, where the error belongs)."""

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._outcome: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(call,), name=name, daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._outcome["value"] = call()
        except BaseException as error:  # handed to the thread that waits for the result
            self._outcome["error"] = error

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> T:
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome["error"]
        value: T = self._outcome["value"]
        return value
