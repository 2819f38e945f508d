"""mkdocs hook: the repository's own Markdown files become pages of the site, read at build time.

README.md is the home page, CHANGELOG.md and CONTRIBUTING.md are pages, and each leaderboard folder
(``leaderboards/<name>/``, its README with the figures and files it links) and the example plugin's README
are published under the same relative paths, so their links keep working and nothing is copied by hand.
A link to a repository file that the site does not publish becomes its path in code type (the site has no
public source browser to point at).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]

# repository path -> site path of the Markdown files that become pages
PAGES = {
    "README.md": "index.md",
    "CHANGELOG.md": "changelog.md",
    "CONTRIBUTING.md": "contributing.md",
    "examples/mmrobust_example_plugin/README.md": "plugins/example-plugin.md",
}
# files published beside a leaderboard's README (figures, its configuration, the generated reports)
LEADERBOARD_ASSETS = ("*.png", "*.md", "sweep.yaml", "*.html", "cards/*/*.json")
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def published() -> dict[str, str]:
    """Repository path -> site path of every file this hook adds."""
    files = dict(PAGES)
    for board in sorted((ROOT / "leaderboards").glob("*/README.md")):
        folder = board.parent.relative_to(ROOT).as_posix()
        for pattern in LEADERBOARD_ASSETS:
            for path in sorted(board.parent.glob(pattern)):
                name = "index.md" if path.name == "README.md" else path.relative_to(board.parent).as_posix()
                files[path.relative_to(ROOT).as_posix()] = f"{folder}/{name}"
    return files


def rewrite_links(markdown: str, source: str, site_path: str, files: dict[str, str], docs: set[str]) -> str:
    """Point the links of ``source`` (a repository path) at the site: published files and docs/ pages keep a
    link (made relative to ``site_path``), other repository files become their path in code type."""
    here = posixpath.dirname(source)
    site_here = posixpath.dirname(site_path)

    def fix(match: re.Match[str]) -> str:
        text, target = match.group(1), match.group(2)
        if re.match(r"[a-z]+:|#", target):  # a URL or an anchor of the same page
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo = posixpath.normpath(posixpath.join(here, path))
        site = files.get(repo) or (repo[len("docs/") :] if repo.startswith("docs/") and repo[5:] in docs else None)
        if site is None:
            return text if text.startswith("`") else f"{text} (`{repo}`)" if text != repo else f"`{repo}`"
        link = posixpath.relpath(site, site_here or ".") + (f"#{anchor}" if anchor else "")
        return f"[{text}]({link})"

    return LINK.sub(fix, markdown)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs = {f.src_uri for f in files}
    mapping = published()
    for source, site in mapping.items():
        path = ROOT / source
        if site in docs:  # a page written in docs/ wins over a published file of the same name
            continue
        if source.endswith(".md"):
            content: str | bytes = rewrite_links(path.read_text(encoding="utf-8"), source, site, mapping, docs)
        else:
            content = path.read_bytes()
        files.append(File.generated(config, site, content=content))
    return files
