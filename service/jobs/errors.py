"""Errors of the Ray Jobs side (service.jobs.client, service.jobs.submit); each message says what to change."""

from __future__ import annotations

__all__ = [
    "JobNotFound",
    "JobsError",
    "RayAuthError",
    "RayUnreachable",
    "SpecTooLarge",
    "SubmissionRefused",
]


class JobsError(RuntimeError):
    """A Ray Jobs call failed; the message says what to change."""


class RayUnreachable(JobsError):
    """The Ray Jobs API (dashboard) did not answer."""


class RayAuthError(JobsError):
    """The cluster wants a token we do not have, or rejected ours."""


class JobNotFound(JobsError):
    """No cpsweep job with this id on the cluster."""


class SpecTooLarge(JobsError):
    """The validated spec does not fit in the job's environment (the API answers 413)."""


class SubmissionRefused(JobsError):
    """The preflight found no Python for the driver or no lasting place for the results."""
