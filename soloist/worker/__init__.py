"""The worker: its loop, the execution of one delivery, the keeper thread, shutdown."""

from .loop import Worker

__all__ = ["Worker"]
