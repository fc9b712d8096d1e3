"""The detached reaper: `python -m restore_tests.reaper FOLDER [CONTAINER_ID]`.

Deletes a finished run's staging folder, then removes its sandbox, after the run itself has
moved on (see cleanup.dispose). It talks to the engine the run used: the run passes it the
variables that chose it (DOCKER_HOST, DOCKER_CONTEXT, ...; sandbox.docker_environment).
Leftovers of a reaper that died are found by prune (labels, expiry) and by the next run
(folders named *.removing).
"""

from __future__ import annotations

import shutil
import sys

from docker.errors import DockerException

from restore_tests import sandbox
from restore_tests.errors import RestoreTestsError


def main(arguments: list[str]) -> int:
    folder, *container = arguments
    shutil.rmtree(folder, ignore_errors=True)
    if container:
        try:
            sandbox.remove_by_id(sandbox.connect(), container[0])
        except (RestoreTestsError, DockerException):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
