"""Check the book's one Quarto configuration, `_quarto.yml`.

- valid YAML, a website project writing to `_docs`, execution disabled (tools/docs.py executes the chapters once);
- `nbs/_quarto.yml` is a link to it (nbdev's docs route reads that path), never a separate, diverging file;
- its sidebar lists every chapter in nbs/ and nothing that does not exist, with paths relative to nbs/
  (Quarto renders the processed copy of nbs/ in _proc/, so `nbs/...` paths would not resolve there);
- its `render:` globs match every chapter (they point at the processed notebooks the pipeline writes).
"""
import sys
from fnmatch import fnmatch
from pathlib import Path
import yaml

root = Path(__file__).resolve().parent.parent
nbs = root / "nbs"

def sidebar(cfg):
    "Every page the sidebar lists, in order, as (section, path relative to nbs/)."
    out = []
    def walk(items, section=None):
        for it in items:
            if isinstance(it, str): out.append((section, it))
            elif isinstance(it, dict):
                if "href" in it: out.append((section, it["href"]))
                walk(it.get("contents", []), it.get("section", section))
    walk(cfg["website"]["sidebar"]["contents"])
    return out

def chapters():
    "Every chapter notebook under nbs/ (scratch notebooks and folders starting with _ or . are not chapters)."
    return sorted(str(p.relative_to(nbs)) for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))

def rendered(rel, globs):
    "Whether Quarto's `project.render` list (globs, `!` excludes) selects `rel`."
    ok = False
    for g in globs:
        if g.startswith("!"):
            if fnmatch(rel, g[1:]): ok = False
        elif fnmatch(rel, g) and (g.count("/") == rel.count("/")): ok = True
    return ok

def main():
    cfg = yaml.safe_load((root / "_quarto.yml").read_text())
    errs = []
    if cfg["project"]["type"] != "website": errs.append("project.type must be website")
    if cfg["project"].get("output-dir") != "_docs": errs.append("project.output-dir must be _docs")
    if (cfg.get("execute") or {}).get("enabled", True) is not False:
        errs.append("execute.enabled must be false (tools/docs.py executes the chapters once and stores their outputs)")
    link = nbs / "_quarto.yml"
    if not link.exists() or link.resolve() != (root / "_quarto.yml").resolve():
        errs.append("nbs/_quarto.yml must be a link to ../_quarto.yml (nbdev-docs reads it; "
                    "fix: rm -f nbs/_quarto.yml && ln -s ../_quarto.yml nbs/_quarto.yml)")
    listed = [rel for _, rel in sidebar(cfg)]
    prefixed = [l for l in listed if l.startswith("nbs/")]
    if prefixed: errs.append("sidebar paths are relative to nbs/; drop the nbs/ prefix of:\n  " + "\n  ".join(prefixed))
    listed = [l.removeprefix("nbs/") for l in listed]
    chs = chapters()
    missing = [c for c in chs if c not in listed]
    dangling = [c for c in listed if not (nbs / c).exists()]
    if missing: errs.append("the sidebar does not list these chapters:\n  " + "\n  ".join(missing))
    if dangling: errs.append("the sidebar lists files that do not exist:\n  " + "\n  ".join(dangling))
    globs = cfg["project"].get("render") or []
    unrendered = [c for c in chs if not rendered(c, globs)]
    if unrendered: errs.append("project.render does not select these chapters:\n  " + "\n  ".join(unrendered))
    if errs:
        print("_quarto.yml:", *errs, sep="\n- "); sys.exit(1)
    print(f"quarto-check: _quarto.yml lists and renders all {len(chs)} chapters; nbs/_quarto.yml links to it")

if __name__ == "__main__": main()
