"""What the CLI and the web API show: task names resolved, a task's state, a worker's row."""
