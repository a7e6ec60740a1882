"""A sweep's job (``-m``) that failed, as the launcher that ran it in a process of its own hands it back."""

from __future__ import annotations


class JobFailed(Exception):
    """A job of a sweep (``-m``) that a launcher ran in a process of its own exited 1, 3 or 75
    (or was stopped); raised so that the launcher hands it back to the sweep, which exits with
    its code (:func:`pipeline.cli.main`)."""

    def __init__(self, code: int, job: str) -> None:
        super().__init__(code, job)  # the arguments it is made again from, unpickled
        self.code, self.job = code, job

    def __str__(self) -> str:
        return f"the sweep failed: {self.job} exited {self.code}; its log says why"
