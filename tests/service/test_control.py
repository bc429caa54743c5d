"""ControlActor's versioned directives and watches, run as plain asyncio (no Ray cluster)."""

from __future__ import annotations

import asyncio

from service.sweeps.control import ControlActor
from trainables.core.wire import Assignment


def test_a_watch_answers_only_when_its_trial_changes():
    async def scenario() -> None:
        actor = ControlActor()
        first = await actor.directive("a")
        assert first.version == 0 and first.verdict_epoch == 0
        watch_a = asyncio.create_task(actor.watch("a", first.version))
        watch_b = asyncio.create_task(actor.watch("b", 0))
        await asyncio.sleep(0.01)
        assert not watch_a.done() and not watch_b.done()  # nothing changed: no answer
        await actor.post_verdict("a", 3, 2)
        d = await asyncio.wait_for(watch_a, 1)
        assert (d.version, d.verdict_epoch, d.verdict_end) == (1, 3, 2)
        assert not watch_b.done()  # another trial's change does not wake it
        await actor.release("b")  # an ended trial's watch is answered, freeing its slot
        assert (await asyncio.wait_for(watch_b, 1)).version == 1

    asyncio.run(scenario())


def test_a_watch_on_an_old_version_answers_at_once_with_everything_so_far():
    async def scenario() -> None:
        actor = ControlActor()
        rule = Assignment({"name": "paper"}, 30, "sync")
        await actor.assign("t", rule)
        await actor.force_switch("t", 7, "cohort")
        await actor.force_switch("t", 9, "cohort")  # later than the one set: ignored
        d = await asyncio.wait_for(actor.watch("t", 0), 1)
        assert d.assignment == rule and (d.switch_epoch, d.switch_source) == (7, "cohort")
        assert d.version == 2  # the ignored switch did not bump it

    asyncio.run(scenario())
