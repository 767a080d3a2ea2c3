"""The book's docs pipeline: `make docs` (all of it) and `make test` (up to the Quarto call, with `--no-quarto`).

1. Process and execute, once. For every chapter that `_quarto.yml` lists (so every chapter: tools/check_quarto.py
   holds the list complete), in a fresh kernel per chapter, `--workers` chapters at a time:
   - nbdev's `add_show_docs` adds a `show_doc(...)` cell after every exported function and class (the API
     entries of nbdev's docs);
   - nbclient executes the notebook top to bottom with those cells (a cell marked `#| eval: false` or with one of
     nbdev's test flags, `tst_flags` in pyproject.toml, is shown but not run); any cell error fails the chapter;
   - nbdev's other doc processors (its `FilterDefaults`, less the two steps done above: its own partial
     execution and `add_show_docs`) strip nbdev's `#|` directives, hide exported and `#| hide` cells, turn
     the title into front matter, and so on;
   - the result goes to `_proc/<chapter>`: nbdev's own folder of processed notebooks, so `nbdev-docs` run
     afterwards renders these executed notebooks as they are (it reprocesses only notebooks newer than them).
   Non-notebook files of nbs/ (images, styles.css, _quarto.yml, which is a link to the root `_quarto.yml`) are
   copied beside them.
2. Check every processed chapter (`check_chapter`): it exists; no `#|` line is left that is not a Quarto cell
   option (`key: value` with a key Quarto knows); no output is an error; and a chapter that ends with a picture
   holds one. "Ends with a picture" is decided from the chapter's source: one of its last three example code
   cells (not exported, not k3d viewer cells) makes a figure, i.e. calls matplotlib (`plt.`, `subplots(`,
   `imshow(`, `savefig(`, `fig`/`axs` objects) or headbook's `show_image`/`mesh_image`; then those cells'
   outputs must hold at least one image (PNG, JPEG or SVG). The per-chapter image counts are printed.
3. Preview: tools/preview.py renders `_proc/` into `_preview/` (offline maths, images inline, an index with the
   book's sections and chapter titles); the index is checked to name every chapter by its title.
4. Quarto: with `quarto` on PATH (and without `--no-quarto`), render `_proc/` with `_quarto.yml` into `_docs/`,
   as `nbdev-docs` does (nbdev's `render_quarto`); without it, stop here and say that Quarto is the missing piece.
"""
import argparse, json, os, re, shutil, sys, threading, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

root = Path(__file__).resolve().parent.parent
nbs, proc_dir = root / "nbs", root / "_proc"
sys.path.insert(0, str(root / "tools"))
from check_quarto import sidebar  # noqa: E402
import yaml  # noqa: E402
try: import tomllib
except ImportError: import tomli as tomllib
nbdev_cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["nbdev"]
skip_flags = set(nbdev_cfg.get("tst_flags", "").split("|")) - {""}

# Quarto's code-cell options (https://quarto.org/docs/reference/cells/cells-jupyter.html); anything else after `#|`
# in a processed notebook is an nbdev directive that the processing failed to remove.
QUARTO_KEY = re.compile(r"^(echo|eval|output|include|warning|error|message|label|classes|column|panel|cap-location"
                        r"|code-[a-z-]+|fig-[a-z-]+|tbl-[a-z-]+|lst-[a-z-]+|layout(-[a-z-]+)?|out-[a-z-]+"
                        r"|html-table-processing|filters?|tags)$")
PLOT = re.compile(r"\bplt\.|\bsubplots\(|\.imshow\(|\.savefig\(|\bfig\b|\baxs?\b|\bshow_image\(|\bmesh_image\(")
VIEWER = re.compile(r"\bk3d_")

def directives(src):
    return [l[2:].strip() for l in src.splitlines() if l.startswith("#|")]

def not_run(src):
    "Cells that are shown but not executed: `#| eval: false`, or one of nbdev's test flags (slow, gpu)."
    ds = directives(src)
    words = {w for d in ds for w in re.split(r"[\s:]+", d) if w}
    return any(d.replace(" ", "") == "eval:false" for d in ds) or bool(words & skip_flags)

def picture_cells(cells):
    """The source cells a chapter ends with a picture by: its last three example code cells (not exported, not
    run-skipped, not k3d viewer cells), kept when they make a figure. Empty: the chapter does not end with a picture."""
    ex = [c for c in cells if c.cell_type == "code" and c.source.strip() and not VIEWER.search(c.source)
          and not not_run(c.source) and not any(d.split()[0] in ("export", "exporti", "exports", "default_exp", "hide")
                                                 for d in directives(c.source) if d)]
    return [c for c in ex[-3:] if PLOT.search(c.source)]

def n_images(cells):
    return sum(1 for c in cells for o in c.get("outputs", [])
               if any(k.startswith("image/") for k in o.get("data", {})))

class Client(NotebookClient):
    "nbclient that leaves cells marked `hb_skip` unexecuted (shown, not run)."
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.metadata.get("hb_skip"): return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

_nbdev_lock = threading.Lock()

def doc_filter():
    from fastcore.nbio import md_frontmatter
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.processors import FilterDefaults, add_show_docs, exec_show_docs
    class Frontmatter(FrontmatterProc):
        """nbdev's front-matter step, except that the title cell keeps its body: nbdev drops the whole cell that
        holds `# Title` and `> subtitle`, and with it any introduction (and equations) written below them."""
        def _update(self, f, cell):
            s = cell.get("source")
            if f is not md_frontmatter or not s or not f(s): return super()._update(f, cell)
            self.fm.update(f(s))
            lines, seen = s.splitlines(), set()
            body = []
            for l in lines:   # drop the first `# ` title line and the first `> ` subtitle line, keep everything else
                kind = "t" if re.match(r"^#\s+\S", l) else "d" if re.match(r"^>\s+\S", l) else None
                if kind and kind not in seen: seen.add(kind); continue
                body.append(l)
            body = "\n".join(body).strip()
            cell.source = body if body else None
    class Filter(FilterDefaults):
        "nbdev's doc processors, less its partial execution and show_doc insertion (done before executing)."
        def base_procs(self):
            return [Frontmatter if p is FrontmatterProc else p for p in super().base_procs()
                    if p not in (add_show_docs, exec_show_docs)]
    return Filter()

def build(rel, timeout):
    """Process and execute one chapter into _proc/rel. Returns (rel, info dict) or raises with the cell error."""
    from fastcore.nbio import read_nb, dict2nb, nb2dict, write_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    src = nbs / rel
    with _nbdev_lock:
        fnb = read_nb(src)
        NBProcessor(nb=fnb, procs=[add_show_docs], rm_directives=False).process()
        for c in fnb.cells:
            if c.get("has_sd"): c.metadata["hb_show_doc"] = True
    nb = nbformat.reads(json.dumps(nb2dict(fnb)), as_version=4)
    raw = nbformat.read(src, as_version=4)
    pics = {c.get("id") for c in picture_cells(raw.cells)}
    helper = nbformat.v4.new_code_cell("from nbdev.showdoc import show_doc")
    helper.metadata["hb_helper"] = True
    nb.cells.insert(0, helper)
    for c in nb.cells:
        if c.cell_type == "code" and not_run(c.source): c.metadata["hb_skip"] = True
    t0 = time.time()
    Client(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(src.parent)}}).execute()
    secs = time.time() - t0
    nb.cells = [c for c in nb.cells if not c.metadata.get("hb_helper")]
    info = {"seconds": round(secs, 1), "images": n_images(nb.cells), "picture_cells": len(pics),
            "picture_images": n_images([c for c in nb.cells if c.get("id") in pics]),
            "viewers": sum(1 for c in nb.cells for o in c.get("outputs", [])
                           if "<iframe srcdoc=" in "".join(o.get("data", {}).get("text/html", ""))[:300])}
    for c in nb.cells:
        c.metadata.pop("hb_skip", None)
        if c.cell_type == "code": c.execution_count = None
    fnb = dict2nb(json.loads(nbformat.writes(nb)))
    fnb.path_ = str(src)   # nbdev's front-matter step reads it
    for c in fnb.cells:
        if c.metadata.pop("hb_show_doc", None): c["has_sd"] = True   # nbdev's mv_exports looks for it
    with _nbdev_lock:
        cwd = os.getcwd(); os.chdir(root)
        try: doc_filter().nb_proc(fnb).process()
        finally: os.chdir(cwd)
    for c in fnb.cells:
        c.pop("has_sd", None)
        if c.cell_type == "code":   # nbdev keeps its own flags as `#| slow: true`-style lines: not Quarto options
            lines = c.source.splitlines(True)
            nbdev_only = lambda l: l.startswith("#|") and ":" in l and not QUARTO_KEY.match(l[2:].split(":")[0].strip())
            c.source = "".join(l for l in lines if not nbdev_only(l))
    dst = proc_dir / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(fnb, dst); dst.touch()
    return info

def check_chapter(rel, info):
    "Problems of one processed chapter in _proc/ (empty list: fine). See the module docstring."
    p = proc_dir / rel
    if not p.exists(): return [f"{rel}: no processed notebook in _proc/"]
    nb = nbformat.read(p, as_version=4)
    errs = []
    for i, c in enumerate(nb.cells):
        if c.cell_type != "code": continue
        for l in c.source.splitlines():
            if l.startswith("#|"):
                key = l[2:].split(":")[0].strip() if ":" in l else None
                if key is None or not QUARTO_KEY.match(key):
                    errs.append(f"{rel}: cell {i} keeps the nbdev directive {l!r}")
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                errs.append(f"{rel}: cell {i} raised {o.get('ename')}: {o.get('evalue')}")
    if info is not None and info["picture_cells"] and not info["picture_images"]:
        errs.append(f"{rel}: ends with a picture (its last example cells plot) but they produced no image")
    return errs

def copy_assets():
    "Non-notebook files of nbs/ into _proc/ (links followed: _quarto.yml arrives as a copy of the root file)."
    for p in nbs.rglob("*"):
        rel = p.relative_to(nbs)
        if p.is_dir() or p.suffix == ".ipynb" or any(x.startswith(".") for x in rel.parts): continue
        quarto_files = ("_quarto.yml", "_brand.yml", "_metadata.yml")
        if any(x.startswith("_") for x in rel.parts) and str(rel) not in quarto_files: continue
        if str(rel) in ("nbdev.yml", "sidebar.yml"): continue
        d = proc_dir / rel; d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, d)

def quarto_render(workers):
    "Render _proc/ into _docs/ exactly as nbdev-docs does."
    from nbdev.quarto_render import render_quarto
    from nbdev.quarto import _fix_quarto_nav
    render_quarto(proc_dir, proc_dir / "_docs", n_workers=workers)
    shutil.rmtree(root / "_docs", ignore_errors=True)
    shutil.move(str(proc_dir / "_docs"), str(root / "_docs"))
    _fix_quarto_nav(root / "_docs")

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="chapter paths relative to nbs/ (default: every chapter in _quarto.yml)")
    ap.add_argument("--workers", type=int, default=2, help="chapters executed in parallel")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    ap.add_argument("--preview", default="_preview", help="folder of the HTML preview ('' : none)")
    ap.add_argument("--no-quarto", action="store_true",
                    help="stop before the Quarto call even when Quarto is installed (CI)")
    a = ap.parse_args()
    os.chdir(root)
    # the kernels inherit the environment: `make` exports MPLBACKEND=Agg, under which plt.show() stores no figure
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    cfg = yaml.safe_load((root / "_quarto.yml").read_text())
    chs = [rel for _, rel in sidebar(cfg)]
    todo = [r for r in chs if not a.only or r in a.only]
    if a.only and len(todo) != len(a.only):
        sys.exit(f"docs: not chapters in _quarto.yml: {sorted(set(a.only) - set(todo))}")
    T0 = time.time()
    # nbdev empties its _proc/ cache when pyproject.toml is newer than it; do that here too, before writing
    if proc_dir.exists() and proc_dir.stat().st_mtime < (root / "pyproject.toml").stat().st_mtime and not a.only:
        shutil.rmtree(proc_dir)
    proc_dir.mkdir(exist_ok=True)
    copy_assets()
    infos, failed = {}, []
    def run(rel):
        try: return rel, build(rel, a.timeout), None
        except Exception as e: return rel, None, f"{type(e).__name__}: {str(e)[-3000:]}"
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=a.workers) as ex:
        for rel, info, err in ex.map(run, todo):
            if err: failed.append(rel); print(f"docs: FAILED {rel}\n{err}", file=sys.stderr, flush=True)
            else:
                infos[rel] = info
                pic = f", ends with a picture: {info['picture_images']} image(s)" if info["picture_cells"] else ""
                k3d = f", {info['viewers']} k3d viewer(s)" if info["viewers"] else ""
                print(f"docs: {rel} executed in {info['seconds']}s, {info['images']} image(s){pic}{k3d}", flush=True)
    proc_dir.touch()
    if failed: print("docs: cell errors in", *failed, sep="\n  ", file=sys.stderr); sys.exit(1)
    errs = [e for rel in todo for e in check_chapter(rel, infos.get(rel))]
    if not a.only:
        orphans = [str(p.relative_to(proc_dir)) for p in proc_dir.rglob("*.ipynb")
                   if str(p.relative_to(proc_dir)) not in chs and not p.name.startswith("_")]
        for o in orphans: (proc_dir / o).unlink()   # chapters that were renamed or removed
    if errs: print("docs: processed notebooks fail their checks:", *errs, sep="\n  ", file=sys.stderr); sys.exit(1)
    print(f"docs: {len(todo)} chapters processed and executed into _proc/ ({time.time() - T0:.0f}s); checks passed")
    if a.preview:
        import preview
        missing = preview.build(proc_dir, root / a.preview, [(s, r) for s, r in sidebar(cfg) if r in todo], cfg)
        if missing:
            print("docs: the preview index lacks the titles of:", *missing, sep="\n  ", file=sys.stderr)
            sys.exit(1)
    if a.no_quarto:
        print("docs: stopped before the Quarto call (--no-quarto)"); return
    if not shutil.which("quarto"):
        print("docs: Quarto is the missing piece: `quarto` is not on PATH, so the site was not rendered into _docs/.\n"
              "      Everything before it is done: the processed, executed notebooks are in _proc/ and the HTML "
              f"preview in {a.preview or '(none)'}/.\n"
              "      Install Quarto (1.7 or later, https://quarto.org/docs/get-started/), then rerun `make docs` "
              "(or `nbdev-docs`, which renders the same _proc/).")
        return
    t = time.time(); quarto_render(a.workers)
    print(f"docs: Quarto rendered _proc/ into _docs/ ({time.time() - t:.0f}s)")

if __name__ == "__main__": main()
