"""A pytest plugin for the notebook runs (`make test-notebooks`, `make test-full`): a cell that writes more than a
handful of outputs to stderr fails. A saved, exported or headless-run notebook keeps each stderr write as an output
of its own, so progress bars drawn as a stream become walls of frames there (`sprc_lib.progress` draws them in
one display line instead); warnings stay, a few to a cell.

    python -m pytest notebooks --nbval-lax -p tests.support.quiet_cells
"""

from __future__ import annotations

import nbval.plugin

MOST_STDERR_OUTPUTS = 5
_coalesce = nbval.plugin.coalesce_streams


def _counted(outputs):
    """nbval's own merge of a cell's stream outputs, after counting the stderr ones it receives."""
    stderr = [o for o in outputs or [] if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    if len(stderr) > MOST_STDERR_OUTPUTS:
        last = stderr[-1]["text"].strip().splitlines()[-1:] or [""]
        raise AssertionError(f"{len(stderr)} stderr outputs in one cell (at most {MOST_STDERR_OUTPUTS}): a progress "
                             f"bar drawn as a stream? The last: {last[0][:200]!r}")
    return _coalesce(outputs)


nbval.plugin.coalesce_streams = _counted
