"""The notebooks run top to bottom on the outputs of the end-to-end workflow run."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["explore.ipynb"])
def test_notebook_executes_on_a_workflow_run(repo, workflow_run, name, monkeypatch):
    workdir, _ = workflow_run
    monkeypatch.setenv("LPNTK_WORKDIR", str(workdir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    nb = nbformat.read(repo / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "showing: tiny" in text and "share of pairs with positive lpNTK" in text
