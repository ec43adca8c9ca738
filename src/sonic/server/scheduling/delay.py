"""Whether holding a partial batch for ``max_queue_delay_microseconds`` is worth it.

Triton's dynamic batcher holds every partial batch for the configured delay, so that
other requests can join it.  That only pays when others arrive within the delay.  A
CMSSW job that sends one event after another, or any client keeping one request in
flight, never has company: each of its requests waits the whole delay for nothing (100
µs of a 450 µs round trip in ``benchmarks/server_vs_triton.py`` at concurrency 1).

Triton's config calls the delay a maximum, so the batcher may send earlier.  The rule
here watches what recent waits gathered: after :data:`FUTILE_TO_SKIP` waits in a row in
which no request joined, a partial batch goes at once; every :data:`PROBE_EVERY`-th one
still waits, to notice when company comes back.  Any wait that gathers a request, and
any batch that finds several requests already queued, restores the full delay.  Under
load nothing changes: requests that arrive while an execution runs are batched as
before.  ``--adaptive-batch-delay=false`` holds every delay, as Triton does.
"""

from __future__ import annotations

#: Waits in a row that gathered nothing before the batcher stops waiting.
FUTILE_TO_SKIP = 32
#: While skipping, one partial batch in this many still waits the delay (a probe).
PROBE_EVERY = 16


class DelayWatch:
    """Judges, batch by batch, whether a partial batch should wait for company."""

    def __init__(self, adaptive: bool = True) -> None:
        self.adaptive = adaptive
        #: Waits in a row that ended with no request added.
        self.futile = 0
        #: Partial batches sent without waiting (tests and diagnostics).
        self.skipped = 0
        self._since_probe = 0

    def looked(self, queued: int) -> None:
        """A batch is being formed from ``queued`` compatible requests: several at once
        means there is company to wait for."""
        if queued > 1:
            self.futile = 0

    def worth_waiting(self) -> bool:
        """Asked when a partial batch would start to wait for the delay."""
        if not self.adaptive or self.futile < FUTILE_TO_SKIP:
            return True
        self._since_probe += 1
        if self._since_probe >= PROBE_EVERY:
            self._since_probe = 0
            return True
        self.skipped += 1
        return False

    def waited(self, gathered: bool) -> None:
        """A wait ended; ``gathered``: at least one request joined during it."""
        self.futile = 0 if gathered else self.futile + 1
