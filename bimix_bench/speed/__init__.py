"""Throughput sweeps (`bimix-bench speed`) and the throughput-regression gate (`check`).

- calibration: the fixed workloads every model figure is divided by (ratios, not seconds)
- timing: paired calibration / workload timing in rounds, and the test-only slowdown hook
- workloads: forward, train-step and decode callables of one sized model
- sweep: models x contexts x kinds, sized to a budget, into one speed document
- document: the speed JSON (also the reference file of `check`) and device classes
- regression: reference vs measurement, offenders beyond a tolerance
"""
