"""Make the site ``asv publish`` wrote work without the internet.

asv 0.6's ``index.html`` loads jQuery, flot, Bootstrap and three small
plugins from CDNs. This copies the same libraries, kept in
``asv_benchmarks/www_vendor/`` (with their licences), into the site and points
the page at them:

    asv publish && python asv_benchmarks/publish_offline.py   # then asv preview

It exits with status 1, naming the address, if the page loads anything else
from the internet (a newer asv's), so that a site that would need the network
is never taken for one that does not.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENDOR = ROOT / "asv_benchmarks" / "www_vendor"

#: Each CDN address asv 0.6.x's index.html names -> the vendored file (under VENDOR).
LOCAL = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "js/jquery-3.3.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "js/jquery.flot.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": (
        "js/jquery.flot.time.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": (
        "js/jquery.flot.selection.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": (
        "js/jquery.flot.categories.js"
    ),
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": (
        "js/jquery.flot.orderBars.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": (
        "js/stupidtable.min.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "js/md5.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": (
        "js/bootstrap.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": (
        "css/bootstrap.min.css"
    ),
}

#: Attributes that only make sense for a file from another origin (the
#: integrity hashes are those of the CDN's builds).
_CROSS_ORIGIN = re.compile(r'\s+(integrity|crossorigin|referrerpolicy)="[^"]*"')
_TAG = re.compile(r"<(script|link)\b[^>]*>")
_REMOTE = re.compile(r'(?:src|href)="(https?://[^"]+)"')


def offline(html: str) -> tuple[str, list[str]]:
    """(``html`` with each script and stylesheet of LOCAL loaded from
    ``vendor/``, the remote addresses of the scripts and stylesheets left)."""
    left = []

    def rewrite(match):
        tag = match.group(0)
        remote = _REMOTE.search(tag)
        if remote is None:
            return tag
        url = remote.group(1)
        if url not in LOCAL:
            if match.group(1) == "script" or 'rel="stylesheet"' in tag:
                left.append(url)
            return tag
        return _CROSS_ORIGIN.sub("", tag.replace(url, "vendor/" + LOCAL[url]))

    return _TAG.sub(rewrite, html), left


def html_dir() -> pathlib.Path:
    """The site's folder, from asv.conf.json's html_dir."""
    text = (ROOT / "asv.conf.json").read_text()
    conf = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))
    return ROOT / conf.get("html_dir", "html")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html-dir", type=pathlib.Path, help="default: asv.conf.json's html_dir")
    args = parser.parse_args(argv)
    site = args.html_dir or html_dir()
    index = site / "index.html"
    if not index.is_file():
        print(f"publish_offline: no {index}; run asv publish first", file=sys.stderr)
        return 1
    html, left = offline(index.read_text())
    if left:
        print(f"publish_offline: {index} still loads {', '.join(left)}", file=sys.stderr)
        return 1
    shutil.copytree(VENDOR, site / "vendor", dirs_exist_ok=True)
    index.write_text(html)
    print(f"{index}: every script and stylesheet now loads from {site / 'vendor'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
