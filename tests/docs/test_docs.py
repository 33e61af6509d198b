"""The documentation site's configuration covers the docs: every page in docs/ is in mkdocs.yml's navigation, every
subpackage of vidgen has an API page, and (when mkdocs is installed: `make docs`) the site builds in strict mode."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# subpackages / modules whose API is for the repository's own commands, not for users
NOT_IN_API = {"cli", "demo", "testing", "app"}  # app: the `vidgen serve` command (docs/app.md)


def mkdocs_config() -> dict:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_navigation():
    config = mkdocs_config()
    assert config["docs_dir"] == "docs" and config.get("strict") is True
    pages = nav_pages(config["nav"])
    assert len(pages) == len(set(pages)), "a page appears twice in the navigation"
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "results" not in p.parts}
    assert on_disk - set(pages) == set(), f"pages outside the navigation: {sorted(on_disk - set(pages))}"


def test_every_public_subpackage_has_an_api_page():
    package = ROOT / "vidgen"
    names = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    names |= {p.stem for p in package.glob("*.py") if not p.stem.startswith("_")}
    wanted = names - NOT_IN_API
    for name in sorted(wanted):
        page = DOCS / "api" / f"{name}.md"
        assert page.is_file(), f"vidgen.{name} has no API page (docs/api/{name}.md)"
        assert f"::: vidgen.{name}\n" in page.read_text(), f"docs/api/{name}.md does not render vidgen.{name}"
        assert f"api/{name}.md" in nav_pages(mkdocs_config()["nav"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (make docs installs it)")
def test_the_site_builds_in_strict_mode(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "pipelines" / "index.html").is_file()
