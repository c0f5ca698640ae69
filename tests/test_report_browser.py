"""A report page in headless Chromium: it loads offline, every image decodes and the
console stays clean. Skips when Chromium is absent, unless $CI is set (then it fails)."""

import json
import os
import re
import shutil
import subprocess

import pytest
from report_data import copy_of, report_dirs  # noqa: F401  (session fixture)

from vglab.report import write_report

pytestmark = pytest.mark.browser

# Injected first into <head> of a copy of the page: records errors (script errors and
# resources that fail to load) and, on load, checks every image and writes the result
# into the DOM, which --dump-dom prints.
PROBE = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  window.__errs.push(e.message || ('failed to load ' + ((e.target && (e.target.src || e.target.href)) || '?').slice(0, 80)));
}, true);
var __ce = console.error;
console.error = function () { window.__errs.push(Array.prototype.join.call(arguments, ' ')); __ce.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
  var out = document.createElement('pre');
  out.id = 'vglab-check';
  out.textContent = JSON.stringify({images: imgs.length, bad: bad, errors: window.__errs,
                                    widths: imgs.map(function (i) { return i.naturalWidth; })});
  document.body.appendChild(out);
});
</script>"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("Chromium is required on CI for the browser test (apt-get install chromium)")
    pytest.skip("Chromium is not installed")


def _check(browser, page: str, where, tmp_path):
    """Load `page` (with the probe) in Chromium; returns (check dict, stderr)."""
    probe = where / "report-probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="vglab-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    check = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    return check, proc.stderr


def test_the_probe_sees_broken_images_and_errors(tmp_path):
    """The check itself is not vacuous: a broken image and a script error are reported."""
    browser = _chromium()
    page = ('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
            '<img alt="broken" src="data:image/png;base64,AAAA"><script>undefinedFunction();</script></body></html>')
    check, _ = _check(browser, page, tmp_path, tmp_path)
    assert check["bad"] == ["broken"]
    assert any("undefinedFunction" in e for e in check["errors"])


def test_report_renders_in_headless_chromium(report_dirs, tmp_path):
    browser = _chromium()
    out = copy_of("large-params", tmp_path)
    page = write_report(out).read_text()
    check, stderr = _check(browser, page, out, tmp_path)
    n_imgs = len(re.findall(r"<img ", page))
    assert check["images"] == n_imgs >= 5
    assert check["bad"] == [] and all(w > 100 for w in check["widths"]), check
    assert check["errors"] == [], check["errors"]
    console = [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
