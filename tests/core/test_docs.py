"""The docs stay true: every hook is documented, and CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pluggy

from interlock.core import hookspecs

ROOT = Path(__file__).resolve().parents[2]


def _hook_names() -> list[str]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return sorted(name for name in dir(pm.hook) if not name.startswith("_"))


def test_every_hook_has_a_heading_in_contributing() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    headings = set(re.findall(r"^### (\w+)$", text, re.M))
    missing = [name for name in _hook_names() if name not in headings]
    assert not missing, f"hooks without a '### name' section in CONTRIBUTING.md: {missing}"


def test_every_hookspec_has_a_docstring() -> None:
    for name in _hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 40, f"hookspec {name} needs a docstring saying when it runs and what a return means"
        if getattr(hookspecs, name).interlock_spec.get("firstresult"):
            assert "Stops at first non-None result" in doc, name


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    serve_cmd, test_cmd = blocks[0].strip(), blocks[1].strip()
    assert "interlock serve" in serve_cmd
    assert "pytest" in test_cmd
    assert readme.index(serve_cmd) < 200, "the README must open with the commands"
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


class _AnyEnv(dict[str, str]):
    """Every ${VAR} in a docs example is set."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return "x" * 32  # long enough for a [[keys]] key


def test_every_toml_example_in_the_readme_is_a_valid_config() -> None:
    import tomllib

    from interlock.core import config

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        config.parse(tomllib.loads(block), environ=_AnyEnv())  # raises ConfigError with key paths


def _layout_block() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text[text.index("### Layout"):]
    return section[section.index("```") + 3: section.index("```", section.index("```") + 3)]


def test_contributings_layout_names_every_engine_and_accounting_module() -> None:
    """The architecture section's map covers the code: a module added without a place in it fails here."""
    layout = _layout_block()
    words = set(re.findall(r"\w+", layout))
    unnamed = []
    for package in ("core", "accounting"):
        for path in sorted((ROOT / "interlock" / package).rglob("*.py")):
            sub = path.parent.relative_to(ROOT / "interlock" / package)
            if path.name == "__init__.py" and str(sub) == ".":
                continue
            if path.stem not in words and path.name != "__init__.py":
                unnamed.append(str(path.relative_to(ROOT)))
            if str(sub) != "." and f"{sub}/" not in layout:  # a subpackage is named with its slash
                unnamed.append(str(path.relative_to(ROOT)))
    assert unnamed == []


def test_every_file_contributings_layout_names_exists() -> None:
    layout = _layout_block()
    files = set(re.findall(r"\b(\w+\.py)\b", layout))
    present = {p.name for p in (ROOT / "interlock").rglob("*.py")} | {p.name for p in (ROOT / "tests").rglob("*.py")}
    assert sorted(files - present) == []
    for path in re.findall(r"^((?:interlock|tests)/[\w/.]*)", layout, re.M):
        assert (ROOT / path).exists(), path


def test_the_repository_stands_on_its_own() -> None:
    """Docs, code and scripts never point at design notes or references kept outside the repository."""
    outside = re.compile(r"DESIGN\.md|\.\./shared|shared reference|\b(providers|front-doors|peers|litellm|otel|style)\.md\b")
    offenders = []
    for pattern in ("*.md", "docs/**/*.md", "interlock/**/*.py", "tests/**/*.py", "bench/**/*.py", "scripts/**/*",
                    "bench/**/*.md"):
        for path in ROOT.glob(pattern):
            if not path.is_file() or path.name == "test_docs.py":
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if outside.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert offenders == []
