"""The invite page (``GET /invite``) in a real headless Chromium against a real membershipd,
and the app association files as Apple and Android read them.

What is proven: the QR code on the page decodes (zxing-cpp, an independent decoder) to exactly
the link; the encoder is right at every version's capacity; "Open in the app" carries the
token in the ``unibus://`` form; the page makes no request that holds the token, and the
server's log does not hold it either; malformed and missing codes are said plainly; the page
works without JavaScript, and on a plain-http loopback server; it is accessible (landmarks,
labels, contrast of at least 4.5:1 in light and dark, visible keyboard focus); and loading it
changes nothing (the invite stays pending). Each state is captured at phone (390) and desktop
(1280) widths, light and dark, in the output folder.
"""

import http.client
import io
import json
import re
import ssl
import subprocess

import pytest
import zxingcpp
from PIL import Image

from conftest import (
    ANDROID_PACKAGE,
    ANDROID_STORE_URL,
    APP_NAME,
    FINGERPRINTS,
    IOS_APP_ID,
    IOS_STORE_URL,
    MEMBERSHIPD,
)

VIEWS = [(390, "phone"), (1280, "desktop")]
SCHEMES = [(False, "light"), (True, "dark")]
# Byte-mode capacity of each version 1 to 40 at error correction level M (ISO/IEC 18004,
# table 7): the encoder must pick exactly this version for a text of exactly this length.
CAPACITY_M = [14, 26, 42, 62, 84, 106, 122, 152, 180, 213, 251, 287, 331, 362, 412, 450, 504,
              560, 624, 666, 711, 779, 857, 911, 997, 1059, 1125, 1190, 1264, 1370, 1452, 1538,
              1628, 1722, 1809, 1911, 1989, 2099, 2213, 2331]


def visible(browser, element_id):
    return browser.eval(
        f"(() => {{ const e = document.getElementById('{element_id}');"
        " return !!e && e.getClientRects().length > 0; })()"
    )


def text_of(browser, element_id):
    return browser.eval(f"document.getElementById('{element_id}').textContent")


def decode_png(png):
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))
    assert len(results) == 1, f"{len(results)} codes found"
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode
    return results[0].text


def token_of(link):
    return link.split("#", 1)[1]


def capture_all_views(browser, url, out_dir, state, javascript=True, check=None):
    """Loads ``url`` in each view and scheme, writes a screenshot of each, and runs ``check``
    in each."""
    for width, view in VIEWS:
        for dark, scheme in SCHEMES:
            browser.open(url, width=width, height=844 if width < 600 else 900, dark=dark,
                         javascript=javascript)
            browser.screenshot(out_dir / f"{state}-{view}-{scheme}.png")
            if check:
                check(width, dark)


def test_a_link_shows_open_in_the_app_and_a_qr_code_of_exactly_the_link(
    app_server, browser, out_dir
):
    link = app_server.invite()
    token = token_of(link)
    assert link == f"{app_server.public_url}/invite#{token}"

    def check(width, dark):
        assert visible(browser, "ok") and not visible(browser, "bad")
        assert browser.eval("document.getElementById('open').href") == (
            f"unibus://127.0.0.1:{app_server.port}/invite#{token}"
        )
        assert visible(browser, "open") and not visible(browser, "nodeep")
        assert browser.eval("document.getElementById('link').value") == link
        assert decode_png(browser.screenshot(selector="#qr")) == link

    capture_all_views(browser, link, out_dir, "valid", check=check)


def test_a_token_in_capitals_or_a_query_still_gives_the_canonical_link(app_server, browser):
    link = app_server.invite()
    token = token_of(link)
    for url in (f"{app_server.public_url}/invite#{token.upper()}",
                f"{app_server.public_url}/INVITE#{token}",
                f"{app_server.public_url}/invite?utm_source=chat#{token}"):
        browser.open(url, width=390)
        assert browser.eval("document.getElementById('link').value") == link, url
        assert decode_png(browser.screenshot(selector="#qr")) == link, url


def test_no_request_the_page_makes_holds_the_token_and_nothing_changes(app_server, browser):
    link = app_server.invite()
    token = token_of(link)
    start = browser.open(link, width=390)
    browser.eval("document.getElementById('copy').click()")
    events = browser.events[start:]
    sent = [e["params"] for e in events if e.get("method") == "Network.requestWillBeSent"]
    on_the_wire = [e["params"] for e in events
                   if e.get("method") == "Network.requestWillBeSentExtraInfo"]
    # The one request is the page itself, without its fragment.
    assert [s["request"]["url"] for s in sent] == [f"{app_server.public_url}/invite"]
    assert on_the_wire, "Chromium reported the headers it sent"
    for params in sent + on_the_wire:
        request = params.get("request", {})
        text = json.dumps({k: v for k, v in request.items() if k != "urlFragment"})
        text += json.dumps(params.get("headers", {}))
        assert token not in text.lower(), "a request carries the token"
    assert token not in app_server.log_text().lower()
    assert set(app_server.invite_statuses()) == {"pending"}, "an invite was touched"


@pytest.mark.parametrize(
    "state, fragment, says",
    [
        ("missing", "", "This link has no invite code."),
        ("missing", "#", "This link has no invite code."),
        ("short", "#" + "a" * 63, "it has 63"),
        ("long", "#" + "a" * 65, "it has 65"),
        ("not-hex", "#" + "g" * 64, "holds other characters"),
        ("very-long", "#" + "ab" * 50_000, "it has 100000"),
        ("two-fragments", "#" + "a" * 64 + "#x", "holds other characters"),
        ("space", "#" + "a" * 32 + "%20" + "a" * 31, "holds other characters"),
    ],
)
def test_a_link_without_a_well_formed_code_says_so_plainly(
    app_server, browser, out_dir, state, fragment, says
):
    url = f"{app_server.public_url}/invite{fragment}"

    def check(width, dark):
        assert visible(browser, "bad") and not visible(browser, "ok")
        assert says in text_of(browser, "why")
        assert browser.eval("document.querySelector('#qr svg')") is None

    if state in ("missing", "short") and fragment != "#":
        capture_all_views(browser, url, out_dir, f"{state}-code", check=check)
    else:
        browser.open(url, width=390)
        check(390, False)


def test_without_javascript_the_page_explains_what_to_do(app_server, browser, out_dir):
    link = app_server.invite()

    def check(width, dark):
        assert not visible(browser, "app")
        body = browser.eval("document.body.innerText")
        assert "copy it from the address bar and paste it into the app" in body
        assert f"You are invited to {APP_NAME}" in body

    capture_all_views(browser, link, out_dir, "no-javascript", javascript=False, check=check)


def test_a_plain_http_loopback_server_has_no_deep_link_but_a_qr_code(plain_server, browser):
    link = plain_server.invite()
    assert link.startswith("http://127.0.0.1:")
    browser.open(link, width=1280)
    assert not visible(browser, "open") and visible(browser, "nodeep")
    assert decode_png(browser.screenshot(selector="#qr")) == link
    body = browser.eval("document.body.innerText")
    assert "You are invited to unibus" in body, "the default app name"
    assert "Ask the person who invited you where to get it." in body, "no store configured"


def test_the_longest_host_name_still_gives_a_readable_qr_code(app_server, browser):
    # 253 characters, the longest DNS name; *.test leads to 127.0.0.1 in this browser.
    host = ".".join(["h" * 62] + ["h" * 61] * 3) + ".test"
    assert len(host) == 253
    token = token_of(app_server.invite())
    link = f"https://{host}:{app_server.port}/invite#{token}"
    browser.open(link, width=390)
    assert browser.eval("document.getElementById('link').value") == link
    assert browser.eval("document.getElementById('open').href") == f"unibus://{link[8:]}"
    assert decode_png(browser.screenshot(selector="#qr")) == link


def test_the_qr_encoder_picks_the_right_version_and_decodes_at_every_capacity(
    app_server, browser
):
    browser.open(f"{app_server.public_url}/invite", width=1280)

    def matrix(text):
        rows = browser.eval(
            f"(() => {{ const r = qrCode(new TextEncoder().encode({json.dumps(text)}));"
            " return r && r.map(row => row.map(c => c ? 1 : 0).join('')); })()"
        )
        return rows

    def decode(rows, scale=3):
        size = len(rows) + 8
        image = Image.new("L", (size * scale, size * scale), 255)
        pixels = image.load()
        for y, row in enumerate(rows):
            for x, cell in enumerate(row):
                if cell == "1":
                    for dy in range(scale):
                        for dx in range(scale):
                            pixels[(x + 4) * scale + dx, (y + 4) * scale + dy] = 0
        results = zxingcpp.read_barcodes(image)
        return results[0].text if results else None

    source = "https://members.example.com/some/base/path/invite#" + "0123456789abcdef" * 200
    for version, capacity in enumerate(CAPACITY_M, start=1):
        for length, expected in ((capacity, version), (capacity + 1, version + 1)):
            text = source[:length]
            rows = matrix(text)
            if expected > 40:
                assert rows is None, "too long for version 40"
                continue
            assert len(rows) == 17 + 4 * expected, f"{length} bytes"
            assert decode(rows) == text, f"version {expected}, {length} bytes"


def fetch(server, path, method="GET", headers=None):
    """A request straight to ``server`` (no redirect followed): status, headers, body."""
    if server.public_url.startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context,
                                                 timeout=10)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def apple_pattern(pattern, text):
    """Apple's component pattern matching: ``*`` any run of characters, ``?`` exactly one."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None


def test_the_apple_app_site_association_is_what_apple_documents(app_server):
    status, headers, body = fetch(app_server, "/.well-known/apple-app-site-association")
    assert status == 200, "served directly, not redirected"
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert set(document) == {"applinks"}
    details = document["applinks"]["details"]
    assert isinstance(details, list) and len(details) == 1
    assert details[0]["appIDs"] == [IOS_APP_ID]
    assert all(re.fullmatch(r"[A-Z0-9]{10}\.[A-Za-z0-9.-]+", i) for i in details[0]["appIDs"])
    components = details[0]["components"]
    known = {"/", "?", "#", "exclude", "comment", "caseSensitive", "percentEncoded"}
    for component in components:
        assert set(component) <= known, component
        assert all(isinstance(component[k], str) for k in ("/", "#", "comment") if k in component)
        assert isinstance(component.get("caseSensitive", False), bool)
    # The invite path with a token matches; the page without one does not, nor other paths.
    token = "ab" * 32

    def opens_app(path, fragment):
        return any(apple_pattern(c["/"], path) and apple_pattern(c.get("#", "*"), fragment)
                   for c in components if not c.get("exclude"))

    assert opens_app("/invite", token) and opens_app("/INVITE", token)
    assert not opens_app("/invite", "") and not opens_app("/register", token)


def test_assetlinks_is_what_android_documents(app_server):
    status, headers, body = fetch(app_server, "/.well-known/assetlinks.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    statements = json.loads(body)
    assert statements == [{
        "relation": ["delegate_permission/common.handle_all_urls"],
        "target": {
            "namespace": "android_app",
            "package_name": ANDROID_PACKAGE,
            "sha256_cert_fingerprints": FINGERPRINTS,
        },
    }]
    for fingerprint in statements[0]["target"]["sha256_cert_fingerprints"]:
        assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint)


def test_the_association_files_are_not_served_when_no_app_is_configured(plain_server):
    for path in ("/.well-known/apple-app-site-association", "/.well-known/assetlinks.json"):
        status, _, _ = fetch(plain_server, path)
        assert status == 404, path


def test_the_page_names_the_operators_app_and_store_pages(app_server, browser):
    browser.open(f"{app_server.public_url}/invite", width=1280)
    links = browser.eval(
        "[...document.querySelectorAll('[aria-labelledby=get-title] a')].map(a => [a.textContent, a.href, a.rel])"
    )
    assert [url for _, url, _ in links] == [IOS_STORE_URL, ANDROID_STORE_URL]
    assert all(rel == "noreferrer noopener" for _, _, rel in links)
    assert browser.eval("document.title") == f"An invitation to {APP_NAME}"


CONTRAST = """(() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255;
    return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (e) => { for (; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c; } return [255, 255, 255]; };
  const out = [];
  for (const e of document.querySelectorAll('h1, h2, h3, p, label, a, button, input, li')) {
    if (!e.getClientRects().length) continue;
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(background(e));
    out.push([e.tagName + (e.id ? '#' + e.id : ''), (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]);
  }
  return out;
})()"""


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_the_page_is_accessible(app_server, browser, dark):
    link = app_server.invite()
    browser.open(link, width=390, dark=dark)
    assert browser.eval("document.querySelectorAll('main').length") == 1
    assert browser.eval("document.querySelectorAll('footer').length") == 1
    assert browser.eval("document.documentElement.lang") == "en"
    assert browser.eval("document.getElementById('link').labels[0].textContent") == "Invite link"
    assert browser.eval("document.getElementById('qr').getAttribute('role')") == "img"
    assert browser.eval("document.getElementById('qr').getAttribute('aria-label')")
    contrasts = browser.eval(CONTRAST)
    assert len(contrasts) > 8
    low = [(what, round(ratio, 2)) for what, ratio in contrasts if ratio < 4.5]
    assert not low, f"contrast under 4.5:1: {low}"
    # The keyboard reaches the button first, and its focus is drawn.
    browser.key("Tab", "Tab", 9)
    assert browser.eval("document.activeElement.id") == "open"
    outline = browser.eval(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()"
    )
    assert outline[0] == "solid" and outline[1] >= 2


def test_the_page_is_small_and_carries_its_security_headers(app_server, out_dir):
    status, headers, body = fetch(app_server, "/invite")
    assert status == 200
    assert len(body) < 16 * 1024
    (out_dir / "page-bytes.txt").write_text(f"{len(body)}\n")
    csp = headers["content-security-policy"]
    assert csp.startswith("default-src 'none';") and "frame-ancestors 'none'" in csp
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"


def test_hostile_requests_get_the_page_or_a_clean_4xx_and_change_nothing(app_server):
    before = app_server.invite_statuses()
    cases = [
        ("/invite/../register", 404),  # http.client sends the path as it is
        ("/invite/x", 404),
        ("/invite?" + "q" * 8000, 200),
        ("/invite?" + "q" * 20000, 414),
        ("/invite%00", 404),
    ]
    for path, expected in cases:
        status, _, _ = fetch(app_server, path)
        if expected == 414:
            assert 400 <= status < 500, (path[:20], status)
        else:
            assert status == expected, (path[:20], status)
    odd = {"Host": "evil.example", "Referer": "x" * 4000, "X-Forwarded-Host": "evil.example",
           "Accept": "text/html;;;q=x", "Range": "bytes=5-1"}
    status, _, body = fetch(app_server, "/invite", headers=odd)
    assert status == 200 and b"You are invited" in body
    status, _, _ = fetch(app_server, "/invite", method="POST")
    assert status == 405
    assert app_server.invite_statuses() == before


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--android-package", "com.example.chat"], "--android-cert-fingerprint"),
        (["--android-package", "com.example.chat", "--android-cert-fingerprint", "AB:CD"],
         "AA:BB"),
        (["--ios-app-id", "com.example.chat"], "TEAMID.bundle.id"),
        (["--ios-store-url", "http://apps.apple.com/app"], "https://"),
    ],
)
def test_malformed_app_settings_stop_membershipd_saying_what_to_do(tmp_path, flags, says):
    done = subprocess.run(
        [MEMBERSHIPD, "--data-dir", str(tmp_path), *flags, "invite", "list"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert says in done.stderr, done.stderr
