"""Blinker signals sent for every job. The sender is the Flask app; the job is
passed as ``job=``. Receivers run in the thread that changed the job's state;
an exception in a receiver is logged and never breaks the job.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: Sent when a job has been accepted by its backend, in the submitting thread.
job_submitted = _signals.signal("job-submitted")
#: Sent when a job starts running, in the thread that runs it.
job_started = _signals.signal("job-started")
#: Sent by :meth:`Job.set_progress`, in the thread that reported progress.
job_progress = _signals.signal("job-progress")
#: Sent when a job has ended (succeeded, failed or cancelled), after its
#: context was torn down.
job_finished = _signals.signal("job-finished")
