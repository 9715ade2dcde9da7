"""Phases: `up` (and `phase run`) as an ordered tree of named steps, run by one runner that can
dry-run, skip, and resume from a journal. phase.py is the data, runner.py runs it, journal.py
remembers, up.py is the list `kubeprov up` runs."""

from provision.phases.journal import Journal
from provision.phases.phase import Phase, flatten, select
from provision.phases.runner import PhaseFailed, Reporter, Runner, RunReport

__all__ = ["Journal", "Phase", "PhaseFailed", "Reporter", "RunReport", "Runner", "flatten", "select"]
