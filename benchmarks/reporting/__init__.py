"""The pieces of benchmarks/report.py: a loader for benchmarks/results/, Markdown helpers, and one
module per question BENCHMARKS.md answers. Every number they print comes from the JSON."""
