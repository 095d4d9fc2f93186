"""asv_benchmarks/publish_offline.py: every CDN script and stylesheet of
asv's page is pointed at a vendored copy that exists, and a page that loads
anything else from the internet is refused."""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parent.parent
publish = runpy.run_path(str(ROOT / "asv_benchmarks" / "publish_offline.py"))


def _page(urls):
    tags = [
        f'<link rel="stylesheet" href="{u}" integrity="sha256-x" crossorigin="anonymous">'
        if u.endswith(".css")
        else f'<script src="{u}" integrity="sha512-y" crossorigin="anonymous"></script>'
        for u in urls
    ]
    return "<html><head>" + "\n".join(tags) + '<script src="asv.js"></script></head></html>'


def test_every_cdn_file_is_vendored_and_the_page_points_at_it(tmp_path):
    local = publish["LOCAL"]
    for name in local.values():
        assert (publish["VENDOR"] / name).stat().st_size > 1000, name
    (tmp_path / "index.html").write_text(_page(local))
    assert publish["main"](["--html-dir", str(tmp_path)]) == 0
    html = (tmp_path / "index.html").read_text()
    assert "https://" not in html and "integrity" not in html and "crossorigin" not in html
    for name in local.values():
        assert f'"vendor/{name}"' in html and (tmp_path / "vendor" / name).is_file()
    assert '<script src="asv.js"></script>' in html


def test_a_page_loading_other_remote_files_is_refused(tmp_path, capsys):
    page = _page([*publish["LOCAL"], "https://cdn.example.org/new-plugin.js"])
    (tmp_path / "index.html").write_text(page)
    assert publish["main"](["--html-dir", str(tmp_path)]) == 1
    assert "still loads https://cdn.example.org/new-plugin.js" in capsys.readouterr().err
    assert (tmp_path / "index.html").read_text() == page
    assert not (tmp_path / "vendor").exists()
