"""A static HTML report: tables, figures, failed points and side-by-side videos per prompt.

The page needs no server and no network: figures are PNG files next to it and videos are linked by
relative path (or copied next to it with ``copy_videos=True``). A small inline script writes what
loaded into ``#render-check`` once the page has finished loading (used by the rendering test).
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

from deepforcing.atomic import atomic_path, write_text_atomic

from .data import Results
from .figures import file_slug
from .tables import Table

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f3f3f3; } td:nth-child(1), td:nth-child(2) { text-align: left; white-space: nowrap; }
tr.ours td { background: #eef6ff; } tr.published td { color: #444; }
p.note { font-size: 0.85em; color: #555; max-width: 1100px; }
figure { display: inline-block; margin: 0.5em; } figure img { max-width: 680px; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; }
.videos { display: flex; flex-wrap: wrap; gap: 0.8em; }
.videos figure video { width: 256px; background: #000; }
.failed td { color: #a00; text-align: left; }
#render-check { font-size: 0.7em; color: #999; }
"""

CHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById('render-check');
  el.setAttribute('data-images', String(imgs.length));
  el.setAttribute('data-images-loaded', String(ok));
  el.setAttribute('data-tables', String(document.querySelectorAll('table').length));
  el.setAttribute('data-videos', String(document.querySelectorAll('video').length));
  el.textContent = 'rendered: ' + ok + '/' + imgs.length + ' images';
});
document.addEventListener('DOMContentLoaded', function () {
  var el = document.getElementById('render-check');
  var meta = 0, failed = 0;
  el.setAttribute('data-videos-loaded', '0');
  el.setAttribute('data-videos-failed', '0');
  document.querySelectorAll('video').forEach(function (v) {
    v.addEventListener('loadedmetadata', function () {
      meta += 1; el.setAttribute('data-videos-loaded', String(meta));
      el.setAttribute('data-video-size', v.videoWidth + 'x' + v.videoHeight);
    });
    v.addEventListener('error', function () { failed += 1; el.setAttribute('data-videos-failed', String(failed)); });
  });
});
"""


def table_html(t: Table) -> str:
    df = t.frame()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for r, row in zip(t.rows, df.itertuples(index=False), strict=True):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        body.append(f'<tr class="{r.source}">{cells}</tr>')
    return (f'<h3 id="{html.escape(t.name)}">{html.escape(t.title)}</h3>\n<p class="note">{html.escape(t.note)}</p>\n'
            f'<table data-table="{html.escape(t.name)}"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody></table>\n")


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def write_report(results: Results, tables: list[Table], figures: list[tuple[Path, str]], out_dir: str | os.PathLike,
                 title: str = "deepforcing sweep report", copy_videos: bool = False, notes: list[str] = ()) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>",
             "<p class=\"note\">Sweeps: " + html.escape(", ".join(dict.fromkeys(p.sweep for p in results.points)))
             + f"; {len(results.done)} finished point(s), {len(results.problems)} failed or incomplete.</p>"]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    parts.append('<h2 id="tables">Tables</h2>')
    parts += [table_html(t) for t in tables]

    parts.append('<h2 id="failed">Failed and incomplete points</h2>')
    fails = results.failures()
    if fails.empty:
        parts.append("<p>None.</p>")
    else:
        rows = "".join(
            f"<tr><td>{html.escape(r.sweep)}</td><td>{html.escape(r.key)}</td><td>{html.escape(r.label)}</td>"
            f"<td>{html.escape(r.status)}</td><td>{html.escape(r.error)}</td></tr>" for r in fails.itertuples())
        parts.append('<table class="failed"><thead><tr><th>sweep</th><th>key</th><th>point</th><th>status</th>'
                     f"<th>error</th></tr></thead><tbody>{rows}</tbody></table>")

    parts.append('<h2 id="figures">Figures</h2>')
    if not figures:
        parts.append("<p>No figures (no per-clip series in these sweeps).</p>")
    for path, caption in figures:
        parts.append(f'<figure><img src="{html.escape(_rel(path, out))}" alt="{html.escape(caption)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    parts.append('<h2 id="videos">Videos, side by side per prompt</h2>')
    v = results.videos[results.videos["metric"] == "fps"]
    for prompt, g in v.groupby("prompt", sort=False):
        parts.append(f'<h3 class="prompt">{html.escape(str(prompt))}</h3><div class="videos">')
        for r in g.itertuples():
            src = Path(r.mp4)
            if copy_videos:
                dst = out / "videos" / file_slug(r.label) / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.exists():
                    with atomic_path(dst) as tmp:
                        shutil.copy2(src, tmp)
                src = dst
            parts.append(f'<figure><video controls muted loop preload="metadata" src="{html.escape(_rel(src, out))}">'
                         f"</video><figcaption>{html.escape(r.label)}</figcaption></figure>")
        parts.append("</div>")
    parts.append('<p id="render-check">not rendered</p>')

    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style><script>{CHECK_JS}</script></head>\n<body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    return write_text_atomic(out / "index.html", page)
