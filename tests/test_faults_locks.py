"""A sync killed with SIGKILL leaves its lock behind: the next run on the same machine takes it over at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from sqlalchemy import Engine

from storage.locks import LockBusy, hold_lock, lock_holder, try_acquire


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_whose_process_is_gone_is_taken_over_at_once(db_engine: Engine) -> None:
    host = socket.gethostname()
    dead = f"PID {_dead_pid()} on {host} (funnelsync sync)"
    assert try_acquire(db_engine, "sync:ds_a", dead)
    with hold_lock(db_engine, "sync:ds_a", "PID 1 on elsewhere (next)", wait_seconds=0):
        holder = lock_holder(db_engine, "sync:ds_a")
        assert holder is not None and holder.owner == "PID 1 on elsewhere (next)"


@pytest.mark.parametrize("owner", [f"PID {os.getpid()} on {socket.gethostname()} (funnelsync sync)",
                                   "PID 999999 on some-other-machine (funnelsync sync)",
                                   "flow run brave-fox (1234) on worker-1"])
def test_a_lock_whose_holder_may_still_run_stays_taken(db_engine: Engine, owner: str) -> None:
    assert try_acquire(db_engine, "sync:ds_b", owner)
    with pytest.raises(LockBusy), hold_lock(db_engine, "sync:ds_b", "PID 2 on elsewhere (next)", wait_seconds=0):
        pytest.fail(f"the lock held by {owner!r} was taken over")
    holder = lock_holder(db_engine, "sync:ds_b")
    assert holder is not None and holder.owner == owner
