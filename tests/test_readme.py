"""The commands and links of README.md and docs/*.md point at things that exist.

Nothing is run: the Makefile, ``src/arctax/cli.py`` and the files are read. Checked: every
``make TARGET`` of a ``bash`` block is a Makefile target, every ``arctax SUBCOMMAND`` is one of
the command line's subcommands, every file given to ``--configfile`` / ``--config`` exists, and
every relative markdown link reaches a file (and, with ``#anchor``, a heading of it, slugged as
GitHub does).
"""

from __future__ import annotations

import os
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = [*DOCS, REPO / "config" / "README.md"]  # links are checked here too
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of a markdown text: (language, lines)."""
    out, lang, lines = [], None, []
    for line in text.splitlines():
        m = FENCE.match(line)
        if m and lang is None:
            lang, lines = m.group(2), []
        elif m and not m.group(2):
            out.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return out


def prose(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks."""
    out, inside = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            out.append(line)
    return out


def commands(text: str, spans: bool = True) -> list[str]:
    """Shell command lines: of the ``bash`` blocks (comments dropped), the ``$ `` lines of other
    blocks and, with ``spans``, the code spans of the prose that start with ``make `` or
    ``arctax `` (an upper-case word there is a placeholder: ``make TARGET``)."""
    found = re.findall(r"`([^`]+)`", "\n".join(prose(text))) if spans else []
    found = [" ".join(s.split()) for s in found]  # a span may wrap across lines
    out = [s for s in found if s.startswith(("make ", "arctax "))]
    for lang, lines in blocks(text):
        for line in lines:
            if lang == "bash":
                line = re.sub(r"(^|\s)#.*", "", line)
            elif line.startswith("$ "):
                line = line[2:]
            else:
                continue
            if line.strip():
                out.append(line.strip())
    return out


def words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # an unbalanced quote across a continued line
        return line.split()


@cache
def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.M)}


@cache
def subcommands() -> set[str]:
    text = (REPO / "src" / "arctax" / "cli.py").read_text()
    return set(re.findall(r"add_parser\(\s*\"([\w-]+)\"", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path.read_text()):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def bad_makes(text: str) -> list[str]:
    bad = []
    for line in commands(text):
        w = words(line)
        for i, word in enumerate(w[:-1]):
            if word != "make":
                continue
            target = next((x for x in w[i + 1 :] if "=" not in x and not x.startswith("-")), None)
            if target is not None and not target.isupper() and target not in make_targets():
                bad.append(f"`{line}`: no Makefile target {target!r}")
    return bad


def bad_subcommands(text: str) -> list[str]:
    bad = []
    for line in commands(text):
        w = words(line)
        for i, word in enumerate(w):
            if word != "arctax" and not word.endswith("/arctax"):
                continue
            rest = w[i + 1 :]
            while rest and rest[0] in ("--config", "--set", "--debug"):
                rest = rest[1:] if rest[0] == "--debug" else rest[2:]
            sub = rest[0] if rest else "-"
            if not sub.startswith("-") and not sub.isupper() and sub not in subcommands():
                bad.append(f"`{line}`: no arctax subcommand {sub!r}")
    return bad


def bad_configfiles(text: str) -> list[str]:
    """Files named after --configfile (several may follow) or --config (a YAML file) that are
    missing. Absolute paths and a run's outputs (``results/...``) are not in the repository."""
    bad = []
    for line in commands(text, spans=False):
        w = words(line)
        for i, word in enumerate(w):
            if word == "--configfile":
                named = []
                for x in w[i + 1 :]:
                    if x.startswith("-") or x in ("|", ">", "&&", ";"):
                        break
                    named.append(x)
            elif word == "--config":
                named = [x for x in w[i + 1 : i + 2] if re.search(r"\.ya?ml$", x)]
            else:
                continue
            for name in named:
                if name.startswith(("/", "results/", "$")) or not re.search(r"\.ya?ml$", name):
                    continue
                if not (REPO / name).is_file():
                    bad.append(f"`{line}`: no config file {name}")
    return bad


def bad_links(path: Path) -> list[str]:
    bad = []
    for line in prose(path.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # code spans are not links
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                bad.append(f"]({target}): no file {os.path.relpath(dest, REPO)}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"]({target}): no heading #{anchor} in {dest.name}")
    return bad


@pytest.mark.parametrize("path", DOCS, ids=_ids(DOCS))
def test_commands_name_real_targets_subcommands_and_configs(path):
    text = path.read_text()
    bad = bad_makes(text) + bad_subcommands(text) + bad_configfiles(text)
    assert not bad, f"{path.relative_to(REPO)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", LINKED, ids=_ids(LINKED))
def test_relative_links_resolve(path):
    bad = bad_links(path)
    assert not bad, f"{path.relative_to(REPO)}:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Each check fails on a broken command or link (and passes on good ones)."""
    assert make_targets() >= {"demo", "test", "gpu-check"} and "status" in subcommands()
    text = (
        "```bash\nmake demo\nsrun --gpus=1 make gpu-check   # make nosuch in a comment\n"
        "make nosuch-target\n.venv/bin/arctax --config config/demo.yaml --set a=1 status\n"
        "arctax frobnicate --out x\nsnakemake all --configfile config/demo.yaml config/nosuch.yaml\n"
        "arctax --config config/missing.yaml prepare --out /tmp/d\n```\n"
        "Prose: `make bench`, `make\nno-such-either`, `arctax inspect FILE`.\n"
    )
    assert bad_makes(text) == [
        "`make no-such-either`: no Makefile target 'no-such-either'",
        "`make nosuch-target`: no Makefile target 'nosuch-target'",
    ]
    assert bad_subcommands(text) == [
        "`arctax frobnicate --out x`: no arctax subcommand 'frobnicate'"
    ]
    assert [b.rsplit(" ", 1)[1] for b in bad_configfiles(text)] == [
        "config/nosuch.yaml",
        "config/missing.yaml",
    ]
    (tmp_path / "b.md").write_text("# The `reference`: four ways\n\n## Two\n\n## Two\n")
    doc = tmp_path / "a.md"
    doc.write_text(
        "[ok](b.md) [ok](b.md#the-reference-four-ways) [ok](b.md#two-1) [ok](#here) [web](https://x)\n"
        "[gone](c.md) [no heading](b.md#three) `[code](nowhere.md)`\n\n## Here\n"
    )
    assert [b.split(":")[0] for b in bad_links(doc)] == ["](c.md)", "](b.md#three)"]
