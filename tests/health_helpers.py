"""The failures made on purpose now live in ganrun.callbacks.faults (scripts use them
too); the tests' `health_helpers.<Class>` targets still work."""

from ganrun.callbacks.faults import CollapseG, DataG, FlipD, OneModeG, SegmentG, SpreadG

__all__ = ["CollapseG", "DataG", "FlipD", "OneModeG", "SegmentG", "SpreadG"]
