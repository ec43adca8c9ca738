"""Requests of one plan that arrived together, queued as one item.

The native transport hands the event loop its calls in bulk: under load, one hand-over holds
several ModelInfer calls of the same layout, and a model's plan (:class:`sonic.server.model.
Plan`) already serves each without decoding or validating it again.  What each request still
cost on its own was its bookkeeping: a queue item and its future, an answer callback, a share
of the batcher's work.  Where the scheduler allows it (the dynamic batcher forms the same
batches either way: :meth:`~sonic.server.scheduling.scheduler.DynamicBatcher.groupable`), the
data plane queues such requests as one item, their rows in arrival order, and
:class:`AcceptedGroup` answers each from its slice of the execution.  Each request is still
admitted, counted, timed out, cancelled and answered on its own, with the statuses and
statistics it would have had alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sonic.server.model import LoadedModel, Plan
from sonic.server.scheduling.scheduler import WorkItem

if TYPE_CHECKING:
    from sonic.server.dataplane import Answer, DataPlane


class AcceptedGroup:
    """Requests of one plan the data plane accepted as one queue item
    (:meth:`sonic.server.dataplane.DataPlane.start_group`), not all answered yet."""

    __slots__ = ("answers", "dp", "ids", "item", "left", "model", "plan", "start_ns")

    def __init__(self, dp: DataPlane, model: LoadedModel, plan: Plan, item: WorkItem,
                 start_ns: int, ids: list[str], answers: list[Answer]) -> None:  # fmt: skip
        self.dp = dp
        self.model = model
        self.plan = plan
        self.item = item
        self.start_ns = start_ns
        #: Each request's id; None once it was given up.
        self.ids: list[str | None] = list(ids)
        self.answers = answers
        #: Requests not answered or given up yet.
        self.left = len(ids)

    def members(self) -> list[GroupMember]:
        return [GroupMember(self, i) for i in range(len(self.ids))]

    def ran(self, _: Any) -> None:
        """The group's execution is over: answer each request not given up meanwhile."""
        if not self.left:
            return
        ids = self.ids
        self.dp._release(self.plan.nbytes * self.left, self, self.left)
        self.left = 0
        try:
            parts = self.model.finish_group(self.item, self.start_ns, ids)
        except BaseException as err:
            for rid, answer in zip(ids, self.answers, strict=True):
                if rid is not None:
                    answer(err)
            return
        for rid, answer, part in zip(ids, self.answers, parts, strict=True):
            if rid is not None:
                answer(part)

    def cancel(self, index: int, why: BaseException) -> bool:
        """Give request ``index`` up (its client went away, or it timed out); False if it was
        answered already."""
        if self.ids[index] is None or not self.left:
            return False
        self.ids[index] = None
        self.left -= 1
        last = self.left == 0
        self.dp._release(self.plan.nbytes, self if last else None)
        self.model.withdraw_from_group(self.item, self.start_ns, why, last)
        return True

    def expire(self, why: BaseException) -> None:
        """Past ``--request-timeout-ms``: every request not answered yet gets ``why``."""
        for i, answer in enumerate(self.answers):
            if self.cancel(i, why):
                answer(why)


class GroupMember:
    """One request of an :class:`AcceptedGroup`, as its front end holds it (to cancel it)."""

    __slots__ = ("group", "index")

    def __init__(self, group: AcceptedGroup, index: int) -> None:
        self.group = group
        self.index = index

    def cancel(self, why: BaseException) -> bool:
        return self.group.cancel(self.index, why)
