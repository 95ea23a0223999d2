"""Deploy logic: bootstrap, the per-host ship state machine, and the rollout."""
