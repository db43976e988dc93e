"""The course's wing: what only the notebooks and `make course` need, built on the core library.

A notebook imports what it uses from here (and from `sprc_lib` for the core): the set-up for its
mode, the toy track's models, figures, live curves and the retrieval explorer. Nothing in the core
(data, model, training, evaluation) imports this package.
"""

from sprc_lib.course import figures
from sprc_lib.course.curves import (
    LiveCurves,
    StepTimer,
    learning_rates,
    plot_history,
    plot_loss_terms,
    plot_schedules,
)
from sprc_lib.course.explorer import Explorer, ExplorerWidget, Query, Retriever, img_set_figure, retrieval_grid
from sprc_lib.course.setup import CourseSetup, course_mode, setup
from sprc_lib.course.toy_track import ensure_toy, tiny_model, tiny_run_dir

__all__ = [
    "CourseSetup",
    "Explorer",
    "ExplorerWidget",
    "LiveCurves",
    "Query",
    "Retriever",
    "StepTimer",
    "course_mode",
    "ensure_toy",
    "figures",
    "img_set_figure",
    "learning_rates",
    "plot_history",
    "plot_loss_terms",
    "plot_schedules",
    "retrieval_grid",
    "setup",
    "tiny_model",
    "tiny_run_dir",
]
