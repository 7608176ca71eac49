"""Load tests and benchmarks that talk to a labelwise server on 127.0.0.1."""
