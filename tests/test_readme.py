"""The README's two quickstart commands are what CI runs and what the docs promise."""

from __future__ import annotations

import re


def test_readme_quickstart_commands_match_ci(repo):
    readme = (repo / "README.md").read_text()
    quickstart = readme.split("## Quickstart")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quickstart)
    assert commands[:2] == ["pip install -e . && snakemake --cores all", 'pip install -e ".[test]" && pytest']
    ci = (repo / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == commands[1]  # CI runs command (b) verbatim


def test_profile_and_pyproject_agree_with_the_readme(repo):
    import tomllib

    profile = (repo / "profiles" / "default" / "config.yaml").read_text()
    assert "cores: all" in profile
    meta = tomllib.loads((repo / "pyproject.toml").read_text())
    deps = " ".join(meta["project"]["dependencies"])
    for pkg in ("snakemake", "torch", "torchvision", "numpy", "pandas", "matplotlib", "mlflow", "scikit-learn"):
        assert pkg in deps
    assert "pytest" in " ".join(meta["project"]["optional-dependencies"]["test"])
