"""The only code that reads or writes files: checkpoints, trajectories, metric records."""
