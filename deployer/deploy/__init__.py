"""Deploy logic: every run end to end (``api``), the one bounded runner over
hosts (``runner``, ``rollout``), the per-host ship state machine (``ship``)
and its dry run for ``plan`` (``dryrun``), a host's remote state
(``session``), bootstrap and the day-2 operations (``day2``)."""
