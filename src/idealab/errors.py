"""Exceptions that cross module boundaries."""


class StopRun(Exception):
    """A graceful stop was requested (e.g. the cost cap was reached): finish what is running, start nothing new."""
