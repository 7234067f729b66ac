"""A plugin that SIGKILLs the process running it, once per sweep, when an experience starts
(``-p _sweep_kill``), to show a sweep surviving a killed worker.

It kills at the start of experience ``$CFS_TEST_KILL_AT`` (default 2), after the checkpoint
of the previous experience boundary, and only if it can create the file ``$CFS_TEST_KILL_FLAG``
first: the first run to get there dies, its retry and every other run live."""

from __future__ import annotations

import os
import signal

from cfs import hookimpl


@hookimpl
def cfs_before_training_exp(state) -> None:
    flag = os.environ.get("CFS_TEST_KILL_FLAG")
    if not flag or state.experience.index != int(os.environ.get("CFS_TEST_KILL_AT", "2")):
        return
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
