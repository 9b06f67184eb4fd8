"""Running the service as a process: the server and its workers, JSON logs, Prometheus
metrics and the background threads' loop."""
