"""The benchmark suite: a declarative experiment list (YAML), a resumable runner that appends one
JSON record per finished cell, and a report (Markdown tables, PNG plots) built from those records."""
from compress.suite.report import write_report
from compress.suite.results import read_results
from compress.suite.runner import run_plan
from compress.suite.spec import Cell, Plan, load_plan
from compress.suite.stats import paired_t_test

__all__ = ["Cell", "Plan", "load_plan", "paired_t_test", "read_results", "run_plan", "write_report"]
