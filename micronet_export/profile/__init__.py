"""Latency profiling: local, Android (adb), boards (ssh). The runner is self-contained."""
