"""Producers: plan files into chunk descriptors, enqueue them into Redis, follow the jobs."""

from producers.api import Producer, Submission, new_job_id

__all__ = ["Producer", "Submission", "new_job_id"]
