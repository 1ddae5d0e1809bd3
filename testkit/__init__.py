"""Helpers shared by the tests and the benchmarks: OCI layouts built from seeds (`layouts`), and the
benchmarks' ledger generator and timing (`bench`). Not part of imgtrack, never installed."""
