"""The deferrable twin of ``wait_for_partition``: a trigger that waits for an hour's ``_SUCCESS``.

After Airflow's ``providers/standard`` ``FileTrigger``: ``__init__`` stores plain keyword arguments,
``serialize()`` returns exactly them (the triggerer rebuilds the trigger from that dict, possibly in
another process after a restart), ``run()`` loops one cheap check per poke interval.

Two things differ from ``FileTrigger``:

* The check goes through ``trainer.partition`` (``locate`` + ``is_complete``), so a ``data_root``
  on S3/HDFS works as it does for the poking sensor. pyarrow filesystem calls block, so each check
  runs in a worker thread (``asyncio.to_thread``): the triggerer's event loop, shared by every
  trigger it runs, never waits on storage.
* The trigger enforces its own deadline (an absolute UNIX time, so a triggerer restart does not
  restart the wait) and then fires a ``"timeout"`` event. On Airflow 3.3.2 the deferral ``timeout``
  is enforced only by the scheduler; ``airflow dags test`` runs the trigger inline until its first
  event and never applies that timeout, which is why a deferrable sensor relying on it hung there.
  With the deadline in the trigger, the sensor records the hour missing and skips it in every
  runner.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

#: ``classpath`` of :class:`PartitionTrigger` (what ``serialize()`` returns).
CLASSPATH = "streamtrain_airflow.triggers.PartitionTrigger"


class PartitionTrigger(BaseTrigger):
    """Fire once: when ``<partition of hour>/_SUCCESS`` exists, or when ``deadline`` has passed.

    Parameters
    ----------
    data_root : str
        The config's ``data_root`` (local path or pyarrow URI).
    hour : int
        Hour index of the partition (whole hours since 1970-01-01T00 UTC).
    poke_interval : float
        Seconds between two checks (the config's ``[sensor] poke_seconds``).
    deadline : float
        UNIX time after which the trigger stops waiting and fires a ``"timeout"`` event.
    config_path : str
        The model config, read by each check for its ``[s3]`` settings (so credentials never
        enter the serialized trigger); ``""`` = the storage's defaults.

    Events (payload dict): ``{"status": "landed" | "timeout", "hour", "partition", "pokes",
    "waited_seconds"}``. A failing check (e.g. the storage is unreachable) raises, which fails the
    deferred task like a failing ``poke()`` would; its retries apply.

    >>> PartitionTrigger(data_root="/data", hour=7, poke_interval=5.0, deadline=60.0).serialize()
    ('streamtrain_airflow.triggers.PartitionTrigger', {'data_root': '/data', 'hour': 7,
                                                  'poke_interval': 5.0, 'deadline': 60.0,
                                                  'config_path': ''})
    """

    def __init__(self, *, data_root: str, hour: int, poke_interval: float, deadline: float,
                 config_path: str = "") -> None:
        super().__init__()
        self.data_root = str(data_root)
        self.hour = int(hour)
        self.poke_interval = float(poke_interval)
        self.deadline = float(deadline)
        self.config_path = str(config_path)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (CLASSPATH, {"data_root": self.data_root, "hour": self.hour,
                            "poke_interval": self.poke_interval, "deadline": self.deadline,
                            "config_path": self.config_path})

    def _check(self) -> tuple[str, bool]:
        """One cheap check, blocking (run in a thread): the partition's location and whether it
        has its ``_SUCCESS``."""
        from trainer.config import load_config
        from trainer.partition import is_complete, locate

        s3 = load_config(self.config_path).s3 if self.config_path else None
        part = locate(self.data_root, self.hour, s3)
        return part.location, is_complete(part)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.time()
        pokes = 0
        while True:
            location, done = await asyncio.to_thread(self._check)
            pokes += 1
            self.log.info("%s/_SUCCESS %s", location, "found" if done else "not there yet")
            left = self.deadline - time.time()
            if done or left <= 0:
                yield TriggerEvent({"status": "landed" if done else "timeout", "hour": self.hour,
                                    "partition": location, "pokes": pokes,
                                    "waited_seconds": round(time.time() - started, 1)})
                return
            await asyncio.sleep(min(self.poke_interval, left))
