"""The teacher's two 2-hour labs, laid out from the notebooks themselves.

    make teaching   (python -m sprc_lib.course.lab_plan: executes the eight notebooks in tiny mode, a few minutes)

Each numbered section of a notebook gets a reading time, counted from the words and code lines a student reads
in it (worked solutions and answers left out), and a compute time, measured by executing the notebook. A
section is core or optional (`OPTIONAL`); a lab's clock runs over its core sections, and what is left of two
hours is the buffer. The plan goes into notebooks/TEACHING.md between <!-- labs --> and <!-- /labs -->; a
test checks that its sections and reading times are the notebooks' own and that each lab keeps a buffer.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from sprc_lib.course.reference import write_block
from sprc_lib.course.student import ANSWER, SOLUTION, tags
from sprc_lib.tables import format_table

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TEACHING = NOTEBOOKS / "TEACHING.md"
MARK = "labs"
LABS = {"Lab 1 (00-03): from a CIR query to SPRC's losses": ["00_setup_and_tour", "01_data", "02_blip2_backbone",
                                                            "03_sentence_level_prompts"],
        "Lab 2 (04-07): training, evaluation, the paper's numbers, re-ranking": [
            "04_training", "05_evaluation", "06_reproduce_the_paper", "07_reranking"]}
# Sections a class can leave for home: reference material, full-scale commands, the tours beyond the lesson.
OPTIONAL = {"00_setup_and_tour": {"5"}, "01_data": {"1", "2", "8"}, "04_training": {"3", "7"},
            "05_evaluation": {"3", "4", "7"}, "06_reproduce_the_paper": {"3", "5"}, "07_reranking": {"7"}}
HOMEWORK = ("Exercises", "Questions")  # after the lesson: the labs leave them for home (or for students ahead)
WORDS_PER_MINUTE = 120  # technical prose with equations and figures, read closely
CODE_LINES_PER_MINUTE = 15  # code read to understand it, not skimmed
LAB_MINUTES = 120
MIN_BUFFER = 15  # minutes a lab keeps for questions, a slow machine, a student who is stuck
HEADING = re.compile(r"^#{2} (?:(\d+)\. .*|(Exercises|Questions|Key takeaways|Further reading))$", re.M)


@dataclass
class Section:
    notebook: str
    name: str  # "set-up", a section's number, or a closing heading ("Exercises", ...)
    title: str
    words: int = 0
    code_lines: int = 0
    compute_s: float = 0.0

    @property
    def reading_min(self) -> float:
        return self.words / WORDS_PER_MINUTE + self.code_lines / CODE_LINES_PER_MINUTE

    @property
    def core(self) -> bool:
        return self.name not in OPTIONAL.get(self.notebook, set()) and self.name not in (*HOMEWORK, "Further reading")


def _hidden(cell: nbformat.NotebookNode) -> bool:
    """A worked solution or answer: the student copy leaves it out, so nobody reads it in class."""
    return bool({SOLUTION, ANSWER} & tags(cell))


def _seconds(cell: nbformat.NotebookNode) -> float:
    times = cell.metadata.get("execution", {})
    if "iopub.execute_input" not in times or "shell.execute_reply" not in times:
        return 0.0
    start, end = (datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def sections(notebook: nbformat.NotebookNode, name: str) -> list[Section]:
    """The notebook's sections in order: its set-up (title to the first numbered section), each numbered section,
    then its closing ones; each with the words and code lines a student reads and the seconds its cells took
    (zero in a notebook never executed)."""
    found = [Section(name, "set-up", "title, recap, set-up")]
    for cell in notebook.cells:
        if _hidden(cell):
            continue
        if cell.cell_type == "markdown":
            at = 0
            for match in HEADING.finditer(cell.source):  # text before a heading belongs to the section before it
                found[-1].words += len(cell.source[at:match.start()].split())
                number, closing = match.groups()
                found.append(Section(name, number or closing, match.group(0).lstrip("# ")))
                at = match.end()
            found[-1].words += len(cell.source[at:].split())
        elif cell.cell_type == "code":
            found[-1].code_lines += sum(1 for line in cell.source.splitlines() if line.strip())
            found[-1].compute_s += _seconds(cell)
    return found


def executed(name: str) -> nbformat.NotebookNode:
    """Notebook `name` run top to bottom in tiny mode, in its folder, as `jupyter nbconvert --execute` runs it
    (the copy in the course stays as it is)."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(book, timeout=1800, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return book


def _minutes(value: float) -> str:
    return f"{value:.0f} min" if value >= 1 else "<1 min"


def plan(by_notebook: dict[str, list[Section]]) -> str:
    """The two labs as tables, each with its clock over the core sections and the buffer left."""
    parts = [f"Reading time counts {WORDS_PER_MINUTE} words and {CODE_LINES_PER_MINUTE} lines of code a minute "
             "(worked solutions and answers left out); compute is the cells' own time in tiny mode on the 2-core "
             "reference machine. The clock runs over the core sections; the optional ones are for home or for "
             "students ahead. Exercises and questions are homework (below)."]
    for lab, names in LABS.items():
        rows, clock = [], 0.0
        for name in names:
            for s in by_notebook[name]:
                if s.name in (*HOMEWORK, "Further reading"):
                    continue
                spent = s.reading_min + s.compute_s / 60
                start = clock
                if s.core:
                    clock += spent
                rows.append([name[:2], s.title, "core" if s.core else "optional", _minutes(s.reading_min),
                             f"{s.compute_s:.0f} s", f"{_clock(start)}-{_clock(clock)}" if s.core else "-"])
        buffer = LAB_MINUTES - clock
        parts.append(f"### {lab}\n\n```text\n" + format_table(
            ["nb", "section", "kind", "reading", "compute", "clock"], rows) + "\n```\n\n"
            f"Core sections: {clock:.0f} minutes; buffer: {buffer:.0f} minutes of {LAB_MINUTES}.")
    return "\n\n".join(parts)


def _clock(minutes: float) -> str:
    whole = round(minutes)
    return f"{whole // 60}:{whole % 60:02d}"


def lab_totals(block: str) -> dict[str, tuple[int, int]]:
    """(core minutes, buffer minutes) of each lab in a written plan."""
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in re.finditer(
        r"### (.+?)\n.*?Core sections: (\d+) minutes; buffer: (-?\d+) minutes", block, re.S)}


def main() -> int:
    by_notebook = {}
    for names in LABS.values():
        for name in names:
            print(f"executing {name} ...", flush=True)
            by_notebook[name] = sections(executed(name), name)
    text = plan(by_notebook)
    write_block(TEACHING, text, MARK)
    print(text)
    print(f"wrote the labs into {TEACHING}")
    short = {lab: buffer for lab, (_, buffer) in lab_totals(text).items() if buffer < MIN_BUFFER}
    if short:
        print(f"these labs keep less than {MIN_BUFFER} minutes of buffer: {short}; mark sections optional in "
              "OPTIONAL", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
