"""Budget search: the most accurate model that fits a chip's flash, RAM and cycle budget, found
by an Optuna study on one machine or many (`bitmcu search`)."""

from .space import Param, Space, load_space
from .study import best, open_study, pareto, report_text, run_workers, write_report
from .trial import Budget, Objective, preflight

__all__ = ["Budget", "Objective", "Param", "Space", "best", "load_space", "open_study", "pareto",
           "preflight", "report_text", "run_workers", "write_report"]
