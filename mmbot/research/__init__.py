"""Strategy research: recording, replay, fill models, sweep, report."""
