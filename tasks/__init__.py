"""Task families (installed as bimix_bench.tasks); each registers itself on import."""
