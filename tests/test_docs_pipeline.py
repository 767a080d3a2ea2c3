"The docs pipeline's rules (tools/docs.py, tools/preview.py, tools/check_quarto.py) on small hand-made notebooks."
import subprocess, sys
from pathlib import Path
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

root = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(root / "tools"))
import check_quarto, docs, preview  # noqa: E402


def test_quarto_config_is_one_file_and_lists_every_chapter():
    r = subprocess.run([sys.executable, str(root / "tools" / "check_quarto.py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "nbs" / "_quarto.yml").resolve() == (root / "_quarto.yml").resolve()


def test_render_globs():
    g = ["*.ipynb", "experiments/*.ipynb", "!_*.ipynb"]
    assert check_quarto.rendered("03_geometry.mesh.ipynb", g) and check_quarto.rendered("experiments/eval_now.ipynb", g)
    assert not check_quarto.rendered("_scratch.ipynb", g) and not check_quarto.rendered("other/x.ipynb", g)


def test_picture_rule():
    cells = [new_code_cell("#| export\ndef f(): pass"), new_code_cell("x = 1"),
             new_code_cell("fig, ax = plt.subplots()\nax.plot([1, 2]); plt.show()"),
             new_code_cell("from headbook.viz import k3d_iframe\nk3d_iframe(h)")]
    assert [c.source for c in docs.picture_cells(cells)] == [cells[2].source]       # the k3d cell does not count
    assert docs.picture_cells([new_code_cell("x = 1"), new_code_cell("#| eval: false\nplt.show()")]) == []


def test_check_chapter_finds_directives_and_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "proc_dir", tmp_path)
    err = new_output("error", ename="NameError", evalue="name 'box_v' is not defined", traceback=[])
    nb = new_notebook(cells=[new_code_cell("#| echo: false\n#| output: asis\nshow_doc(f)"),
                             new_code_cell("#| export\nx = 1"), new_code_cell("y", outputs=[err])])
    nbformat.write(nb, tmp_path / "a.ipynb")
    errs = docs.check_chapter("a.ipynb", {"picture_cells": 1, "picture_images": 0})
    assert len(errs) == 3 and "#| export" in errs[0] and "NameError" in errs[1] and "picture" in errs[2]
    assert docs.check_chapter("missing.ipynb", None)[0].startswith("missing.ipynb: no processed notebook")


def test_preview_page_from_processed_notebook():
    sd = new_output("display_data", data={"text/markdown": "[source](u){target=\"_blank\"}"})
    nb = new_notebook(cells=[new_raw_cell("---\ntitle: Mesh utilities\ndescription: Normals and frames\n---\n"),
                             new_markdown_cell("::: {.py-2}\nText $x^2$\n:::"),
                             new_code_cell("#| echo: false\n#| output: asis\nshow_doc(f)",
                                           outputs=[sd]),
                             new_code_cell("#| include: false\nhidden()"), new_code_cell("", outputs=[])])
    out, title, desc = preview.for_html(nb)
    assert (title, desc) == ("Mesh utilities", "Normals and frames")
    assert out.cells[0].source.startswith("# Mesh utilities") and out.cells[1].source == "Text $x^2$"
    assert out.cells[2].metadata["tags"] == ["remove_input"] and out.cells[2].source == "show_doc(f)"
    assert out.cells[2].outputs[0]["data"]["text/markdown"] == "[source](u)"
    assert len(out.cells) == 3
