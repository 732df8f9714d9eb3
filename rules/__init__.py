"""The KPI rules: pure functions and state machines, no I/O, no clock, no asyncio.

Time comes in with the data (``Sample.ts_ms``); the caller decides when a window may
close by passing a watermark.
"""
