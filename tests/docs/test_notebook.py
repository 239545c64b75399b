"""The EDA notebook runs top to bottom on the real extract, and is committed without outputs.

Executing it in the suite is what keeps it from rotting: every cell calls the package's own
functions, so a renamed function or a changed result shape fails here, not in a reader's hands.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_eda_and_baseline.ipynb"
# About a minute on two busy cores; the slowest cell (two model fits) well under this.
CELL_TIMEOUT_SECONDS = 300


def _read() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_without_outputs() -> None:
    # Outputs would hold figures of the (licensed, patient-level) extract and drown diffs.
    dirty = [
        index
        for index, cell in enumerate(_read().cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"code cells {dirty} of {NOTEBOOK.name} hold outputs: clear them before committing "
        "(Clear Outputs of All Cells; docs/walkthrough.md has a one-liner)"
    )


@pytest.mark.real_data
@pytest.mark.timeout(2 * CELL_TIMEOUT_SECONDS)
def test_notebook_runs_on_the_real_extract(real_source: str, tmp_path: Path) -> None:
    # real_source skips (or fails under CI) without the extract; the kernel inherits the
    # environment, so the notebook's Settings read the same HEALTHPREDICT_DATA_SOURCE.
    workdir = tmp_path / "run"
    workdir.mkdir()
    notebook = _read()
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        # 'python3' resolves to this interpreter: jupyter_client runs a spec whose command is
        # plain `python` with sys.executable, i.e. the venv running the tests.
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "some code cells did not run"
    assert not list(workdir.iterdir()), "the notebook must not write files"
