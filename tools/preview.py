"""The book as HTML without Quarto: one page per processed chapter in _proc/ plus an index (tools/docs.py calls it).

It reads what the docs pipeline wrote (executed, nbdev-processed notebooks: directives stripped, show_doc API
entries, stored figures), so it executes nothing itself; `python tools/preview.py` renders whatever _proc/ holds.
Per page: the front matter becomes the title and subtitle; Quarto cell options are honoured (`include: false`
drops a cell, `echo: false` hides its code, `output: false` its outputs) and then removed; Quarto's `:::` fenced-div
lines are dropped; pictures are embedded (outputs and markdown images); equations are rendered by the MathJax 2.7
that the `jupyter-server-mathjax` wheel ships, copied to <out>/mathjax/ (no CDN, works offline). The index lists
the book's sections and chapter titles in the sidebar order of _quarto.yml; each page links back to it and to
its neighbours.
"""
import argparse, html, re, shutil, sys
from pathlib import Path
import nbformat, yaml
from nbconvert import HTMLExporter
from traitlets.config import Config

root = Path(__file__).resolve().parent.parent
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"

def mathjax_dir():
    import jupyter_server_mathjax
    return Path(jupyter_server_mathjax.__file__).parent / "static"

def options(src):
    "Quarto cell options (`#| key: value`) at the top of a code cell, and the source without them."
    opts, body = {}, []
    for l in src.splitlines(True):
        if l.startswith("#|") and ":" in l:
            k, v = l[2:].split(":", 1); opts[k.strip()] = v.strip()
        elif not l.startswith("#|"): body.append(l)
    return opts, "".join(body).strip("\n")

def front_matter(nb):
    "(title, description) from the raw front-matter cell nbdev writes (or the first `# ` heading)."
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.lstrip().startswith("---"):
            fm = yaml.safe_load(c.source.strip().strip("-")) or {}
            return str(fm.get("title", "")), str(fm.get("description", "") or fm.get("subtitle", ""))
        if c.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", c.source, re.M)
            if m: return m.group(1).strip(), ""
    return "", ""

def for_html(nb):
    "Turn a processed notebook into what nbconvert shows as a page (see the module docstring)."
    title, desc = front_matter(nb)
    cells = []
    for c in nb.cells:
        if c.cell_type == "raw":
            if c.source.lstrip().startswith("---"):
                head = f"# {title}" + (f"\n\n> {desc}" if desc else "")
                cells.append(nbformat.v4.new_markdown_cell(head))
            continue
        if c.cell_type == "markdown":
            c.source = "\n".join(l for l in c.source.splitlines() if not l.strip().startswith(":::"))
            if c.source.strip(): cells.append(c)
            continue
        for o in c.get("outputs", []):   # Pandoc attributes in show_doc's markdown (`[source](url){target=...}`)
            md = o.get("data", {}).get("text/markdown")
            if md: o["data"]["text/markdown"] = re.sub(r"\]\(([^)]*)\)\{[^}]*\}", r"](\1)", "".join(md))
        opts, c.source = options(c.source)
        if opts.get("include") == "false": continue
        if opts.get("output") == "false": c.outputs = []
        tags = set(c.metadata.get("tags", []))
        if opts.get("echo") == "false" or not c.source.strip(): tags.add("remove_input")
        c.metadata["tags"] = sorted(tags)
        if "remove_input" in tags and not c.get("outputs"): continue
        cells.append(c)
    nb.cells = cells
    return nb, title, desc

def exporter():
    c = Config()
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}; c.TagRemovePreprocessor.enabled = True
    c.HTMLExporter.exclude_input_prompt = c.HTMLExporter.exclude_output_prompt = True
    c.HTMLExporter.mathjax_url = MATHJAX_URL
    c.HTMLExporter.embed_images = True
    return HTMLExporter(config=c, template_name="lab")

def page_name(rel): return rel.replace("/", "__").replace(".ipynb", ".html")

def nav(prev, nxt, section, site):
    a = lambda p, t: f'<a href="{page_name(p[1])}">{t} {html.escape(p[2])}</a>' if p else ""
    return (f'<nav style="font:14px sans-serif;padding:8px 16px;border-bottom:1px solid #ddd;display:flex;gap:24px">'
            f'<a href="index.html"><b>{html.escape(site)}</b></a><span>{html.escape(section or "")}</span>'
            f'<span style="flex:1"></span>{a(prev, "←")}{a(nxt, "→")}</nav>')

def build(proc, out, chapters, cfg):
    """Render the processed chapters (section, rel) found in `proc` into `out`; write index.html.
    Returns the chapters the index does not name by their title (empty: all are there)."""
    proc, out = Path(proc), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mj = out / "mathjax"
    if not (mj / "MathJax.js").exists(): shutil.copytree(mathjax_dir(), mj, dirs_exist_ok=True)
    site = cfg.get("website", {}).get("title", "headbook")
    exp = exporter()
    pages = []
    for section, rel in chapters:
        p = proc / rel
        if not p.exists(): continue
        nb, title, desc = for_html(nbformat.read(p, as_version=4))
        pages.append([section, rel, title or rel, desc, nb, p])
    for i, (section, rel, title, desc, nb, p) in enumerate(pages):
        body, _ = exp.from_notebook_node(nb, resources={"metadata": {"path": str(p.parent), "name": title}})
        prev = pages[i - 1] if i else None
        nxt = pages[i + 1] if i + 1 < len(pages) else None
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav(prev, nxt, section, site), body, count=1)
        head = f"<title>{html.escape(title)} – {html.escape(site)}</title>"
        body = re.sub(r"<title>.*?</title>", lambda m: head, body, count=1, flags=re.S)
        (out / page_name(rel)).write_text(body)
    items, cur = [], object()
    for section, rel, title, desc, _, _ in pages:
        if section != cur:
            if items: items.append("</ul>")
            items.append(f"<h2>{html.escape(section or 'Start')}</h2><ul>"); cur = section
        d = f' <span class="d">— {html.escape(desc)}</span>' if desc else ""
        items.append(f'<li><a href="{page_name(rel)}">{html.escape(title)}</a>{d}</li>')
    if items: items.append("</ul>")
    descr = cfg.get("website", {}).get("description", "")
    index = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(site)}</title><style>"
             "body{font:16px/1.5 system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em}"
             "h2{margin-top:1.4em;border-bottom:1px solid #ddd}.d{color:#666}li{margin:.2em 0}</style></head><body>"
             f"<h1>{html.escape(site)}</h1><p>{html.escape(descr)}</p>"
             "<p><small>HTML preview of the processed, executed "
             "chapters (built without Quarto; the Quarto site is rendered by <code>make docs</code> where Quarto is "
             f"installed).</small></p>{''.join(items)}</body></html>")
    (out / "index.html").write_text(index)
    missing = [rel for _, rel, title, *_ in pages if f">{html.escape(title)}</a>" not in index or title == rel]
    missing += [rel for _, rel in chapters if not (proc / rel).exists()]
    print(f"preview: {len(pages)} chapters -> {out}/index.html")
    return missing

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proc", default="_proc", help="processed notebooks (written by tools/docs.py)")
    ap.add_argument("--out", default="_preview")
    a = ap.parse_args()
    sys.path.insert(0, str(root / "tools"))
    from check_quarto import sidebar
    cfg = yaml.safe_load((root / "_quarto.yml").read_text())
    missing = build(root / a.proc, root / a.out, sidebar(cfg), cfg)
    if missing: print("preview: not in the index by title:", *missing, sep="\n  "); sys.exit(1)

if __name__ == "__main__": main()
