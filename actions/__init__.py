"""Action executors: email, human tasks, attribute changes (called by the run engine)."""
