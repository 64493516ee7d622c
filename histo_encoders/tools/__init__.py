"""Tools around the library, off the product path: the throughput benchmark, the self-contained
demo, and synthetic slides (for tests, the demo and benchmarks)."""
