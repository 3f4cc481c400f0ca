"""Reading what the experiments wrote: the HTML report, its tables, the results digest and the terminal summary.

Every module here reads files only (``config.json``, ``summary.json``, ``results.csv``, PNGs) and imports no
experiment: :mod:`.sections` finds and loads the experiment folders, :mod:`.tables` formats (seed aggregation,
Markdown, the claims and pivot tables), :mod:`.html` writes ``report.html`` and ``results.md``, :mod:`.digest` keeps
a generated block of a Markdown file equal to the data, :mod:`.summary` is what ``varsmooth run`` / ``varsmooth train``
print on stdout.
"""

from .digest import BEGIN, END, marked_block, results_digest, sync_markdown
from .html import write_report
from .sections import Section, experiment_sections
from .summary import format_table, summarize, summary_rows
from .tables import aggregate, format_value, markdown_table, mean_std, results_table

__all__ = [
    "BEGIN", "END", "Section", "aggregate", "experiment_sections", "format_table", "format_value", "marked_block",
    "markdown_table", "mean_std", "results_digest", "results_table", "summarize", "summary_rows", "sync_markdown",
    "write_report",
]  # fmt: skip
