"""The command line: parses, calls the API, picks a reporter. No deploy logic."""
