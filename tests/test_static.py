"""/static/: the browser-side files of media/, served by the daemon."""

from pathlib import Path

from tests.memory import Connection, make_app

MEDIA = Path(__file__).resolve().parent.parent / "media"


def test_the_browser_client_is_served_with_its_type_etag_and_cache_lifetime():
    app = make_app()
    status, headers, body = Connection(app).send("GET", "/static/cyclone-sse.js").head_and_body()
    assert status == 200
    assert body == (MEDIA / "cyclone-sse.js").read_bytes()
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=3600"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["etag"].startswith('"') and int(headers["content-length"]) == len(body)
    again = Connection(app).send("GET", "/static/cyclone-sse.js",
                                 headers={"If-None-Match": headers["etag"]})
    status, again_headers, again_body = again.head_and_body()
    assert status == 304 and again_body == b"" and again_headers["etag"] == headers["etag"]
    changed = Connection(app).send("GET", "/static/cyclone-sse.js",
                                   headers={"If-None-Match": '"old"'})
    assert changed.head_and_body()[0] == 200


def test_head_gives_the_length_without_the_body():
    app = make_app()
    status, headers, body = Connection(app).send("HEAD", "/static/cyclone-sse.js").head_and_body()
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == (MEDIA / "cyclone-sse.js").stat().st_size


def test_only_files_of_media_exist():
    app = make_app()
    for path in ("/static/nope.js", "/static/", "/static/../README.rst",
                 "/static/%2e%2e%2fREADME.rst", "/static/..%2fcyclone-sse.conf"):
        status, body = Connection(app).send("GET", path).json()
        assert status == 404, path
        assert body["status"] == 404


def test_the_jquery_plugins_are_served_under_their_2013_names_too():
    app = make_app()
    for name in ("jquery.eventsource.js", "jquery.sse.js"):
        status, _, body = Connection(app).send("GET", f"/static/{name}").head_and_body()
        assert status == 200 and body == (MEDIA / name).read_bytes()
    simple = Connection(app).send("GET", "/static/jquery.sse.simple.js").head_and_body()
    assert simple[0] == 200 and simple[2] == (MEDIA / "jquery.sse.js").read_bytes()
