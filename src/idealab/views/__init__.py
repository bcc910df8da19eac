"""Views of a run for people and tools: the HTML report, the live dashboard and the dataset export.

Everything here reads the run database read-only. `data` is the one place that turns the store into the
records these views show; `summary` derives the per-epoch numbers from those records.
"""
