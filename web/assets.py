"""The pages' static files: served compressed, under versioned URLs, cached accordingly.

At start the files of web/static are copied into a directory of this process, where
- every module import between our scripts (`from "./cart.js"`) is rewritten to the imported
  file's versioned URL (`from "/static/js/cart.js?v=<hash of its content>"`), so that a versioned
  script's whole module graph is versioned too (a script's hash covers its imports' hashes);
- every text file gets a gzip sibling (`site.css.gz`), which aiohttp's file response sends to
  browsers that accept gzip (`Content-Encoding: gzip`, `Vary: Accept-Encoding`).
Templates link files with `static_url("css/site.css")` (aiohttp's `url_for` with
`append_version`): `?v=` + the SHA-256 of the served content. A versioned URL is cached for a year
(`immutable`: a new content is a new URL); an unversioned one is revalidated every time (ETag).
Edits to web/static take effect at the next start.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from pathlib import Path

from aiohttp import web

from .keys import STATIC_BUILD

LONG_CACHE = "public, max-age=31536000, immutable"
SHORT_CACHE = "public, no-cache"
COMPRESSED = {".css", ".js", ".mjs", ".json", ".svg", ".txt", ".html", ".map"}
MIN_COMPRESS_BYTES = 256  # smaller files gain nothing worth a header

# `import … from "./x.js"`, `export … from "./x.js"` and `import "./x.js"` at the start of a line.
MODULE_IMPORT = re.compile(r'^(\s*(?:import|export)\b[^;"\']*?(?:\bfrom\s*)?)"(\.{1,2}/[\w./-]+\.m?js)"',
                           re.MULTILINE)


class StaticBuild:
    """The served copy of web/static and the versioned URL of each of its files."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._dir = tempfile.TemporaryDirectory(prefix="web-static-")  # removed at cleanup (or at exit)
        self.directory = Path(self._dir.name)
        self.resource: web.StaticResource | None = None
        self._urls: dict[str, str] = {}

    def url(self, name: str) -> str:
        """The versioned URL of a file, e.g. "/static/js/format.js?v=…"."""
        name = name.lstrip("/")
        if name not in self._urls:
            assert self.resource is not None, "add the static route first"
            self._urls[name] = str(self.resource.url_for(filename=name))
        return self._urls[name]

    def build(self) -> None:
        """Copy every file (modules after the modules they import), then write the gzip siblings."""
        names = sorted(p.relative_to(self.source).as_posix() for p in self.source.rglob("*")
                       if p.is_file() and not p.name.startswith(".") and p.suffix != ".gz")
        done: set[str] = set()
        for name in names:
            self._copy(name, done, ())
        for name in names:
            self._compress(name)

    def _copy(self, name: str, done: set[str], chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            raise ValueError(f"modules import each other in a cycle: {' -> '.join((*chain, name))}")
        source, target = self.source / name, self.directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix in (".js", ".mjs"):
            text = source.read_text(encoding="utf-8")

            def versioned(match: re.Match[str]) -> str:
                imported = (Path(name).parent / match.group(2)).as_posix()
                imported = os.path.normpath(imported).replace(os.sep, "/")
                if not (self.source / imported).is_file():
                    raise ValueError(f"{name} imports {match.group(2)}, which is not in web/static")
                self._copy(imported, done, (*chain, name))
                return f'{match.group(1)}"{self.url(imported)}"'

            target.write_text(MODULE_IMPORT.sub(versioned, text), encoding="utf-8")
            shutil.copystat(source, target)
        else:
            shutil.copy2(source, target)
        done.add(name)

    def _compress(self, name: str) -> None:
        target = self.directory / name
        if target.suffix not in COMPRESSED:
            return
        raw = target.read_bytes()
        if len(raw) < MIN_COMPRESS_BYTES:
            return
        packed = gzip.compress(raw, compresslevel=9, mtime=0)
        if len(packed) >= len(raw):
            return
        sibling = target.with_name(target.name + ".gz")
        sibling.write_bytes(packed)
        shutil.copystat(target, sibling)

    def cleanup(self) -> None:
        self._dir.cleanup()


async def _cache_headers(request: web.Request, response: web.StreamResponse) -> None:
    build = request.app.get(STATIC_BUILD)
    if build is None or response.status not in (200, 206, 304):
        return
    if request.match_info.route.resource is build.resource:
        response.headers["Cache-Control"] = LONG_CACHE if "v" in request.query else SHORT_CACHE


def setup_static(app: web.Application, source: Path, prefix: str = "/static/") -> StaticBuild:
    """Serve `source` at `prefix` as above; templates get the `static_url` of a file from
    `app[STATIC_BUILD].url`."""
    build = StaticBuild(source)
    resource = app.router.add_static(prefix, build.directory, name="static", append_version=True)
    assert isinstance(resource, web.StaticResource)
    build.resource = resource
    build.build()
    app[STATIC_BUILD] = build
    app.on_response_prepare.append(_cache_headers)

    async def remove(_: web.Application) -> None:
        build.cleanup()

    app.on_cleanup.append(remove)
    return build
