"""What status streams wait on: one store read per tick for every job the streams of this process follow,
however many streams there are; and a read of one job alone, by key, when a stream starts following a job
that is not queued, or a supervised worker announces it finished.

Why not a read per stream: 2,000 streams each re-reading their job every 100 ms took the event loop's
whole time (`/health/live` answered in 1.3 s). Here a tick (every 100 ms, longer when more than 500 jobs
are followed) costs one query per 500 followed jobs (their state and newest log line id, no input or
output) in a thread and, at most every `POSITION_SECONDS`, one pass over the queue for the positions of
the queued ones. A stream wakes only when its job changed, then reads its new log lines itself; when
the queue moves, the streams it wakes run a batch per turn of the event loop. Streams are capped per
key, so no key can hold every connection this process may keep.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from pulid_server.store import IN_QUEUE, JobProgress, JobQueue, JobState

log = logging.getLogger("pulid.watch")

TICK_SECONDS = 0.1
ROWS_PER_SECOND = 2000  # with many followed jobs, the tick stretches to read at most this many rows a second
POSITION_SECONDS = 0.5  # queue positions are read this often, or less: see _position_interval
# When the queue moves, every stream of a queued job has news at once. Woken together, 2,000 of them
# would hold every other request back for as long as they all take; so streams woken by a status change
# run a batch per turn of the event loop, and streams whose only news is a new position are woken
# evenly over the time until positions are read again, at most this many a second.
WAKE_BATCH = 50
INLINE_ROWS = 20  # followed jobs read on the event loop itself when the store's reads are inline (SQLite)
POSITION_WAKES_PER_SECOND = 1000


class TooManyStreams(Exception):
    """The key already has `max_per_key` streams open on this API process."""


@dataclass
class _Entry:
    followers: int = 0
    progress: JobProgress | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set, and replaced, on every change


class Follower:
    """One stream's hold on a followed job. `close` is idempotent."""

    def __init__(self, watch: JobWatch, job: JobState, entry: _Entry):
        self._watch, self._job, self._entry = watch, job, entry
        self._open = True

    async def next(self, seen: JobProgress | None, timeout: float) -> JobProgress | None:
        """The job's progress once it differs from `seen` (now, if it already does); None after `timeout`."""
        try:  # asyncio.timeout, not wait_for: no extra task per wait, and thousands of streams wait
            async with asyncio.timeout(timeout):
                while self._entry.progress is seen:  # every change is a new object
                    await self._entry.changed.wait()
        except TimeoutError:
            return None
        return self._entry.progress

    def close(self) -> None:
        if self._open:
            self._open = False
            self._watch._release(self._job)


class JobWatch:
    def __init__(self, queue: JobQueue, max_per_key: int, tick: float = TICK_SECONDS, inline: bool = False):
        self._queue = queue
        self._inline = inline  # SQLite: a read never waits for a lock (AppState.read)
        self._max_per_key = max_per_key
        self._tick = tick
        self._entries: dict[str, _Entry] = {}
        self._per_key: Counter[str] = Counter()
        self._poke = asyncio.Event()
        self._newcomers = False  # a job is followed whose queue position has not been read yet
        self._positions: OrderedDict[str, _Entry] = OrderedDict()  # streams to wake for a new position
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._task = self._loop.create_task(self._run(), name="job-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def follow(self, job: JobState) -> Follower:
        """Start following `job` for one stream (close the Follower when the stream ends)."""
        if self._per_key[job.owner_key_id] >= self._max_per_key:
            raise TooManyStreams(f"this key has {self._max_per_key} status streams open, the most allowed")
        self._per_key[job.owner_key_id] += 1
        entry = self._entries.setdefault(job.id, _Entry())
        entry.followers += 1
        if job.status == IN_QUEUE:  # its position too: at the tick, which comes now
            self._newcomers = True
            self._poke.set()
        else:
            self._read_now(job.id)
            if len(self._entries) == 1:
                self._poke.set()  # the ticks stop while nothing is followed: start them again
        return Follower(self, job, entry)

    def announce(self, job_id: str) -> None:
        """Thread-safe: a job finished (a supervised worker said so); read it now."""
        if self._loop is None or job_id not in self._entries:
            return
        if threading.get_ident() == self._loop_thread:  # the loop's own reader (api/services/doorbell.py)
            self._read_now(job_id)
        else:
            self._loop.call_soon_threadsafe(self._read_now, job_id)

    def _read_now(self, job_id: str) -> None:
        """Read one job that is not queued (two reads by key) where reads are inline; else poke the tick,
        which reads in a thread."""
        if not self._inline:
            self._poke.set()
            return
        try:
            row = self._queue.progress_of(job_id)
        except Exception:  # noqa: BLE001 - the next tick reads it
            log.exception("reading a followed job failed")
            self._poke.set()
            return
        if row is not None:
            self._update(row)

    def _release(self, job: JobState) -> None:
        self._per_key[job.owner_key_id] -= 1
        if self._per_key[job.owner_key_id] <= 0:
            del self._per_key[job.owner_key_id]
        entry = self._entries[job.id]
        entry.followers -= 1
        if entry.followers == 0:
            del self._entries[job.id]
            self._positions.pop(job.id, None)

    async def _run(self) -> None:
        positions_at = 0.0
        while True:
            if not self._entries:
                await self._poke.wait()
            await self._pause(max(self._tick, len(self._entries) / ROWS_PER_SECOND))
            self._poke.clear()
            ids = list(self._entries)
            if not ids:
                continue
            with_positions = self._newcomers or time.monotonic() - positions_at >= self._position_interval()
            self._newcomers = False
            try:  # in a thread, unless it is a few rows of SQLite: for many jobs it takes milliseconds
                if self._inline and len(ids) <= INLINE_ROWS:
                    rows = self._queue.progress(ids, positions=with_positions)
                else:
                    rows = await asyncio.to_thread(self._queue.progress, ids, positions=with_positions)
            except Exception:  # noqa: BLE001 - the store is back at a later tick; streams keep waiting
                log.exception("reading followed jobs failed")
                continue
            if with_positions:
                positions_at = time.monotonic()
            woken = 0
            for row in rows:
                if self._update(row) and (woken := woken + 1) % WAKE_BATCH == 0:
                    await asyncio.sleep(0)  # let those streams (and everything else) run first

    def _position_interval(self) -> float:
        return max(POSITION_SECONDS, len(self._entries) / POSITION_WAKES_PER_SECOND)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` or for a poke, meanwhile waking the streams that have a new position, evenly."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            step = left
            if self._positions:
                batch = max(1, round(len(self._positions) * TICK_SECONDS / self._position_interval()))
                for _ in range(min(batch, len(self._positions))):
                    entry = self._positions.popitem(last=False)[1]
                    _wake(entry)
                step = min(left, TICK_SECONDS)
            try:
                await asyncio.wait_for(self._poke.wait(), step)
                return
            except TimeoutError:
                pass

    def _update(self, row: JobProgress) -> bool:
        """Record a job's progress; True when its streams are woken now (a new position alone wakes them
        during the next pauses)."""
        entry = self._entries.get(row.state.id)
        if entry is None:
            return False
        old = entry.progress
        if row.position is None and row.state.status == IN_QUEUE and old is not None:
            row.position = old.position  # not read this tick: still the last one known
        if row == old:
            return False
        entry.progress = row
        if old is not None and row.state == old.state and row.last_log_id == old.last_log_id:
            self._positions[row.state.id] = entry
            return False
        self._positions.pop(row.state.id, None)
        _wake(entry)
        return True


def _wake(entry: _Entry) -> None:
    entry.changed.set()
    entry.changed = asyncio.Event()
