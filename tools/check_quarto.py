"Check that _quarto.yml is valid YAML and that its sidebar lists every chapter in nbs/ (and nothing missing)."
import sys
from pathlib import Path
import yaml

root = Path(__file__).resolve().parent.parent
cfg = yaml.safe_load((root / "_quarto.yml").read_text())
assert cfg["project"]["type"] == "website", "_quarto.yml: project.type must be website"
listed = []
def walk(items):
    for it in items:
        if isinstance(it, str): listed.append(it)
        elif isinstance(it, dict):
            if "href" in it: listed.append(it["href"])
            walk(it.get("contents", []))
walk(cfg["website"]["sidebar"]["contents"])
nbs = root / "nbs"
chapters = sorted(str(p.relative_to(nbs)) for p in nbs.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts))
listed = [l[len("nbs/"):] if l.startswith("nbs/") else l for l in listed]
missing = [c for c in chapters if c not in listed]
dangling = [c for c in listed if not (nbs / c).exists()]
if missing or dangling:
    if missing: print("_quarto.yml does not list these chapters:", *missing, sep="\n  ")
    if dangling: print("_quarto.yml lists files that do not exist:", *dangling, sep="\n  ")
    sys.exit(1)
print(f"quarto-check: _quarto.yml lists all {len(chapters)} chapters")
