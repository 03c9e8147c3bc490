"""The README's two quickstart commands are what CI runs and what the docs promise."""

from __future__ import annotations

import re


def test_readme_quickstart_commands_match_ci(repo):
    readme = (repo / "README.md").read_text()
    quickstart = readme.split("## The two commands")[1].split("\n## ")[0]
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


def test_readme_fits_two_screens_and_its_links_resolve(repo):
    readme = (repo / "README.md").read_text()
    assert len(readme.splitlines()) <= 220
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (repo / target).exists(), target
    import tomllib

    extras = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in re.findall(r"`\.\[(\w+)\]`", readme):
        assert extra in extras, extra
    assert "nbconvert" in " ".join(extras["notebooks"])
