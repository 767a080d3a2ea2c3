"""Build an HTML preview of the whole book without Quarto (which cannot be installed here).

Executes every chapter listed in _quarto.yml top to bottom with nbclient (cells marked `#| eval: false`
or carrying one of nbdev's skip flags are not run), fails on the first cell error, and writes one HTML
page per chapter plus an index with the sidebar order into --out. Users with Quarto run `nbdev-docs`.
"""
import argparse, html, re, sys, time
from pathlib import Path
import nbformat, yaml
from nbclient import NotebookClient
from nbconvert import HTMLExporter

root = Path(__file__).resolve().parent.parent
try: import tomllib
except ImportError: import tomli as tomllib
skip_flags = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["nbdev"].get("tst_flags", "").split("|")) - {""}

def directives(src):
    return [l[3:].strip() for l in src.splitlines() if l.startswith("#|")]

def prepare(nb):
    "Drop cells that must not run, strip directive lines from what is shown, hide `#| hide` cells."
    keep = []
    for c in nb.cells:
        if c.cell_type == "code":
            ds = directives(c.source)
            words = {w for d in ds for w in re.split(r"[\s:]+", d) if w}
            if any(d.replace(" ", "") == "eval:false" for d in ds) or words & skip_flags: continue
            if "hide" in words: c.metadata["tags"] = list(c.metadata.get("tags", [])) + ["remove_input"]
        keep.append(c)
    nb.cells = keep
    return nb

def chapters():
    cfg = yaml.safe_load((root / "_quarto.yml").read_text())
    out = []
    def walk(items, section=None):
        for it in items:
            if isinstance(it, str): out.append((section, it.removeprefix("nbs/")))
            elif isinstance(it, dict):
                if "href" in it: out.append((section, it["href"].removeprefix("nbs/")))
                walk(it.get("contents", []), it.get("section", section))
    walk(cfg["website"]["sidebar"]["contents"])
    return cfg, out

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="_preview")
    ap.add_argument("--only", nargs="*", help="chapter paths relative to nbs/ (default: all)")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--workers", type=int, default=2, help="chapters executed in parallel")
    a = ap.parse_args()
    outdir = root / a.out; outdir.mkdir(parents=True, exist_ok=True)
    cfg, chs = chapters()
    exp = HTMLExporter(template_name="lab")
    exp.exclude_input_prompt = exp.exclude_output_prompt = True
    from traitlets.config import Config
    c = Config(); c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}; c.TagRemovePreprocessor.enabled = True
    exp = HTMLExporter(config=c, template_name="lab")
    pages, failed = [], []
    todo = [(section, rel) for section, rel in chs if not a.only or rel in a.only]

    def build(item):
        section, rel = item
        p = root / "nbs" / rel
        nb = prepare(nbformat.read(p, as_version=4))
        t0 = time.time()
        try:
            NotebookClient(nb, timeout=a.timeout, kernel_name="python3", resources={"metadata": {"path": str(p.parent)}}).execute()
        except Exception as e:
            return section, rel, None, f"{str(e)[-3000:]}"
        body, _ = exp.from_notebook_node(nb)
        name = rel.replace("/", "__").replace(".ipynb", ".html")
        (outdir / name).write_text(body)
        return section, rel, name, f"{time.time() - t0:.1f}s"

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=a.workers) as ex:
        for section, rel, name, info in ex.map(build, todo):
            if name is None:
                failed.append(rel); print(f"preview: FAILED {rel}\n{info}", file=sys.stderr)
            else:
                pages.append((section, rel, name)); print(f"preview: {rel} ({info})")
    title = cfg.get("website", {}).get("title", "headbook")
    items, cur = [], object()
    for section, rel, name in pages:
        if section != cur: items.append(f"<h3>{html.escape(section or '')}</h3>"); cur = section
        items.append(f'<li><a href="{name}">{html.escape(rel)}</a></li>')
    (outdir / "index.html").write_text(f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                                       f"<h1>{title}</h1><p>HTML preview built without Quarto.</p><ul>{''.join(items)}</ul></body></html>")
    if failed: print("preview: cell errors in", *failed, sep="\n  "); sys.exit(1)
    print(f"preview: {len(pages)} chapters -> {outdir}/index.html")

if __name__ == "__main__": main()
