"""What a run tells people and machines: events, the summary, the JSON report."""
