"""The memory helpers of heavy steps (defs/memory.py): the garbage collector's settings inside
and after ``bulk_gc``, and that a sync run leaves the process's settings as it found them."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from attendee_pipeline.defs.memory import BULK_GC_THRESHOLD, bulk_gc, paced
from attendee_pipeline.integrations.attendee_api.sandbox import SandboxConfig, serve_sandbox
from attendee_pipeline_tests.catalog_factory import event_entry
from attendee_pipeline_tests.pipeline_harness import harness, materialized


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def _settings() -> tuple[tuple[int, int, int], int]:
    return gc.get_threshold(), gc.get_freeze_count()


def test_bulk_gc_raises_the_threshold_freezes_the_heap_and_restores_both():
    before = _settings()
    with bulk_gc():
        assert gc.get_threshold()[0] == BULK_GC_THRESHOLD
        assert gc.get_threshold()[1:] == before[0][1:]
        assert gc.get_freeze_count() > before[1]  # everything alive at entry is frozen
    assert _settings() == before


def test_bulk_gc_restores_after_an_exception_and_only_at_the_outermost_exit():
    before = _settings()
    with pytest.raises(RuntimeError):
        with bulk_gc():
            with bulk_gc():
                pass
            # the inner block's exit left the outer block's settings in place
            assert gc.get_threshold()[0] == BULK_GC_THRESHOLD
            raise RuntimeError("a step failed")
    assert _settings() == before


def test_garbage_made_just_before_bulk_gc_is_freed_not_frozen():
    before = _settings()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    assert gone() is not None  # a cycle: still there until a collection
    with bulk_gc():
        assert gone() is None, "the cycle was frozen with the heap and can never be freed in the block"
    assert _settings() == before


def test_cycles_made_inside_bulk_gc_are_still_collected():
    before = _settings()
    with bulk_gc():
        garbage = _Node()
        gone = weakref.ref(garbage)
        del garbage
        assert gone() is not None  # not freed by reference counting
        # enough new container objects to pass the raised threshold a few times over
        keep = [[] for _ in range(3 * BULK_GC_THRESHOLD)]
        assert gone() is None, "the collector never ran inside the block"
        del keep
    assert _settings() == before  # nothing made inside is left frozen


def test_paced_steps_compute_under_bulk_gc_and_hand_each_value_over_with_the_defaults():
    before = _settings()
    seen_inside: list[int] = []
    finished: list[str] = []

    def step():
        try:
            for n in range(3):
                seen_inside.append(gc.get_threshold()[0])
                yield n
        finally:
            finished.append("closed")

    events = paced(step())
    assert next(events) == 0
    # Dagster holds the first value: the step is suspended and the process is as before
    assert _settings() == before
    assert next(events) == 1
    assert seen_inside == [BULK_GC_THRESHOLD, BULK_GC_THRESHOLD]
    # Dagster stops part-way: nothing stays frozen, and the step's own cleanup runs on close
    assert _settings() == before
    events.close()
    assert finished == ["closed"]
    assert list(paced(iter([]))) == []


def test_a_failing_paced_step_restores_the_settings():
    before = _settings()

    def step():
        yield "raw extract"
        raise RuntimeError("the provider answered 401")

    events = paced(step())
    assert next(events) == "raw extract"
    with pytest.raises(RuntimeError, match="401"):
        next(events)
    assert _settings() == before


def test_a_sync_run_leaves_the_collector_as_it_found_it(tmp_path: Path, sqlite_url: str):
    before = _settings()
    with serve_sandbox({}) as api, harness(tmp_path, sqlite_url) as h:
        api.add_dataset("gc", SandboxConfig(records=30, seed=3, pagination="page", page_size=10))
        h.write_catalog(
            event_entry(
                "gc",
                api.event_url("gc"),
                source={"kind": "rest_api", "url": api.event_url("gc"), "pagination": {"style": "page", "size": 10}},
            )
        )
        result = h.sync("gc")
        assert result.success
        assert materialized(result, "published_attendees")["added"] == 30
    assert _settings() == before
