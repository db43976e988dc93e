"""The progress bar every long job shows: tqdm's text bar, in a terminal, a log and a notebook alike.

Not `tqdm.auto`: in a notebook that draws an ipywidget, and a notebook saved and reopened without its
kernel shows each of those as "Error displaying widget: model not found". A text bar is a stream
output that Jupyter redraws in place (carriage returns) and saves as its last line.
"""

from tqdm.std import tqdm

__all__ = ["tqdm"]
