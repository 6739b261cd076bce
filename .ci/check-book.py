#!/usr/bin/env python3
"""Checks the mdBook sources and the built book.

mdbook builds even when an include is broken: a missing file leaves the raw {{#include}} in
the page, an unknown anchor gives an empty listing. So this checks, for book/src/*.md:
- every {{#include path[:anchor]}} names an existing file, and the anchor has both its
  ANCHOR and ANCHOR_END lines there, with something between them;
- every relative link to a .md file points at an existing chapter, and SUMMARY.md lists every
  chapter;
and, in book/book (the output of `mdbook build`), that no page still holds a `{{#`.
"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
src = root / "book" / "src"
out = root / "book" / "book"
errors = []

include = re.compile(r"\{\{#include\s+([^}:\s]+)(?::([A-Za-z0-9_-]+))?\s*\}\}")
link = re.compile(r"\]\(([^)#\s]+\.md)(#[^)]*)?\)")

for page in sorted(src.rglob("*.md")):
    text = page.read_text()
    rel = page.relative_to(root)
    for m in include.finditer(text):
        target = (page.parent / m.group(1)).resolve()
        anchor = m.group(2)
        if not target.is_file():
            errors.append(f"{rel}: include of missing file {m.group(1)}")
            continue
        if anchor:
            lines = target.read_text().splitlines()
            start = [i for i, l in enumerate(lines) if re.search(rf"ANCHOR:\s*{anchor}\b", l)]
            end = [i for i, l in enumerate(lines) if re.search(rf"ANCHOR_END:\s*{anchor}\b", l)]
            if len(start) != 1 or len(end) != 1:
                errors.append(f"{rel}: anchor `{anchor}` in {m.group(1)}: "
                              f"{len(start)} ANCHOR and {len(end)} ANCHOR_END lines")
            elif end[0] - start[0] < 2:
                errors.append(f"{rel}: anchor `{anchor}` in {m.group(1)} is empty")
    for m in link.finditer(text):
        if "://" in m.group(1):
            continue
        if not (page.parent / m.group(1)).is_file():
            errors.append(f"{rel}: link to missing chapter {m.group(1)}")

summary = (src / "SUMMARY.md").read_text()
listed = set(re.findall(r"\]\(([^)]+\.md)\)", summary))
for page in sorted(src.rglob("*.md")):
    name = str(page.relative_to(src))
    if name != "SUMMARY.md" and name not in listed:
        errors.append(f"book/src/{name}: not listed in SUMMARY.md")

if out.is_dir():
    for html in sorted(out.rglob("*.html")):
        if "{{#" in html.read_text(errors="replace"):
            errors.append(f"{html.relative_to(root)}: unexpanded {{{{# directive")
else:
    errors.append("book/book is missing: run `mdbook build book` first")

for e in errors:
    print(f"book check: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"book check: {len(list(src.rglob('*.md')))} pages, includes, anchors and links ok")
