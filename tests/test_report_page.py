"""The report page as a reader sees it: the demo run's index.html opened in headless Chromium.

Opt in with MIQD_TEST_BROWSER=1: as root the session then installs Debian's chromium and
chromium-driver if they are missing (apt-get; .ci/run sets the variable). Without the opt-in, or
when Chromium cannot be installed or started, the browser tests skip and say why. Selenium runs
offline: it is pointed at the Debian driver and browser, so selenium-manager downloads nothing.

`check_page(path)` is the check itself and works on any report page, e.g.
`python -c "import sys; sys.path.insert(0, 'tests'); import test_report_page as t; print(t.check_page('index.html'))"`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGES = ("chromium", "chromium-driver")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Unavailable(Exception):
    """Chromium cannot be used here; the message says why."""


def ensure_installed(allow_install: bool) -> None:
    """Debian's chromium and chromium-driver, installed with apt-get when missing (as root)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        raise Unavailable(f"Chromium is not installed ({', '.join(missing)} missing) and this is not root")
    if not allow_install:
        raise Unavailable(f"Chromium is not installed ({', '.join(missing)} missing); set MIQD_TEST_BROWSER=1 "
                          f"to let the tests apt-get install {' '.join(PACKAGES)} (.ci/run does)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise Unavailable(f"could not install Chromium ({' '.join(cmd)}): {err}") from None
        if proc.returncode != 0:
            raise Unavailable(f"could not install Chromium ({' '.join(cmd)}): {proc.stderr.strip()[-400:]}")


def start_browser(width: int = 1200, height: int = 2000):
    """A headless Chromium driven through the Debian chromedriver, nothing fetched from the network."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise Unavailable("selenium is not installed (pip install -e '.[test]')") from None
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager, should it run at all, stays offline
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as err:
        raise Unavailable(f"Chromium does not start: {str(err).strip().splitlines()[0][:300]}") from None


# What the browser reports about the loaded page, all of it at once
PAGE_FACTS = """
const imgs = [...document.images].map((img, k) => {
  const fig = img.closest('figure');
  const cap = fig ? fig.querySelector('figcaption') : null;
  return {k: k, alt: img.alt, complete: img.complete, width: img.naturalWidth,
          figure: fig !== null, caption: cap ? cap.innerText.trim() : ''};
});
const nav = document.querySelector('nav.contents');
const links = nav ? [...nav.querySelectorAll('a')].map(a => a.getAttribute('href')) : null;
return {text: document.body.innerText, images: imgs, links: links,
        ids: [...document.querySelectorAll('[id]')].map(e => e.id),
        headings: [...document.querySelectorAll('h2, h3')].map(h => h.innerText.trim()),
        scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth};
"""


def _text_problems(text: str) -> list[str]:
    import re

    problems = []
    for pattern, what in ((r"\bNaN\b|\bnan\b", "a NaN"), (r"\bclass \d+\.0\b", "a class id written as a float"),
                          (r"(?<![\d.])1 ([a-z]+ )?(images|sources|classes)\b", "a singular written as plural")):
        for m in re.finditer(pattern, text):
            context = text[max(0, m.start() - 60): m.end() + 20].replace("\n", " ")
            problems.append(f"visible text shows {what}: ...{context}...")
    return problems


def _image_problems(images: list[dict]) -> list[str]:
    problems = []
    for img in images:
        name = f"image {img['k']} ({img['alt'][:60]!r})"
        if not img["complete"] or img["width"] == 0:
            problems.append(f"{name} is broken: it did not load (naturalWidth {img['width']})")
        if not img["figure"]:
            problems.append(f"{name} is not inside a <figure>")
        elif not img["caption"]:
            problems.append(f"{name} has no (or an empty) <figcaption>")
    return problems


def check_page(path: str | Path, driver=None) -> list[str]:
    """What a reader would trip over on a report page; [] if nothing. Starts Chromium unless given one."""
    own = driver is None
    driver = start_browser() if own else driver
    try:
        driver.get(Path(path).resolve().as_uri())
        facts = driver.execute_script(PAGE_FACTS)
    finally:
        if own:
            driver.quit()
    problems = _text_problems(facts["text"]) + _image_problems(facts["images"])
    if not facts["images"]:
        problems.append("the page shows no image at all")
    ids = set(facts["ids"])
    if not facts["links"]:
        problems.append("no contents list (<nav class='contents'> with links) on the page")
    for href in facts["links"] or []:
        if not href or not href.startswith("#") or href[1:] not in ids:
            problems.append(f"contents link {href!r} points to no element of the page")
    doubled = sorted({h for h in facts["headings"] if facts["headings"].count(h) > 1})
    if doubled:
        problems.append(f"headings repeated: {doubled}")
    if facts["scroll"] > facts["client"]:
        problems.append(f"the page is {facts['scroll']} px wide in a {facts['client']} px window: something "
                        f"overflows instead of scrolling in its own box")
    return problems


@pytest.fixture(scope="session")
def chrome():
    if os.environ.get("MIQD_TEST_BROWSER") != "1":
        pytest.skip("browser tests are opt-in: MIQD_TEST_BROWSER=1 (as root it apt-get installs chromium and "
                    "chromium-driver if missing); .ci/run sets it")
    try:
        ensure_installed(allow_install=True)
        driver = start_browser()
    except Unavailable as err:
        pytest.skip(f"Chromium cannot be used here: {err}")
    yield driver
    driver.quit()


BAD_PAGE = """<!doctype html><html><head><meta charset='utf-8'></head><body>
<nav class='contents'><a href='#here'>here</a><a href='#gone'>gone</a></nav>
<section id='here'><h2>Here</h2><p>worst: class 2.0, 1 images; SRCC NaN</p>
<figure><img alt='broken' src='data:image/png;base64,AAAA'><figcaption>a broken image</figcaption></figure>
<img alt='loose' src='data:image/png;base64,{png}'>
<figure><img alt='mute' src='data:image/png;base64,{png}'><figcaption> </figcaption></figure>
<div style='width: 5000px'>wide</div></section></body></html>
"""


def test_the_check_finds_what_a_reader_would_trip_over(chrome, tmp_path):
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buf, format="PNG")
    page = tmp_path / "bad.html"
    page.write_text(BAD_PAGE.format(png=base64.b64encode(buf.getvalue()).decode()))
    problems = "\n".join(check_page(page, chrome))
    for expected in ("visible text shows a NaN", "class id written as a float", "singular written as plural",
                     "image 0 ('broken') is broken", "image 1 ('loose') is not inside a <figure>",
                     "image 2 ('mute') has no (or an empty) <figcaption>", "contents link '#gone' points to no element",
                     "overflows instead of scrolling"):
        assert expected in problems, expected
    assert "contents link '#here'" not in problems


def test_the_demo_report_page_reads_well_in_a_browser(chrome, demo_run, tmp_path):
    page = demo_run / "report" / "index.html"
    assert check_page(page, chrome) == []
    chrome.get(page.resolve().as_uri())
    shot = tmp_path / "report.png"
    assert chrome.save_screenshot(str(shot)) and shot.stat().st_size > 10_000  # it rendered something


def test_the_demo_page_is_the_same_bytes_when_built_again(demo_run, tmp_path):
    """The page is a function of its inputs: no build time, no temporary path leaks into it."""
    import yaml

    from miqd import cli
    from miqd.train.files import run_name

    config = demo_run.parent / f"{demo_run.name}.yaml"  # what the demo_run fixture gave Snakemake
    runs = [run_name(r) for r in yaml.safe_load(config.read_text())["train"]["runs"]]
    out = tmp_path / "index.html"
    assert cli.main(["report", "--config", str(config), "--tasks", "cls", "det", "ins", "--validated",
                     "--runs", *runs, "--configfiles", str(config), "--out", str(out)]) == 0
    assert out.read_bytes() == (demo_run / "report" / "index.html").read_bytes()


# ---------------------------------------------------------------------------------------------
# the page's parts, without a browser


def test_the_worst_class_reads_as_an_integer_id_with_its_name():
    import pandas as pd

    from miqd.report import _worst_class

    bal = pd.DataFrame({"class": [1, 2], "name": ["", ""], "images": [2, 1], "train": [2, 0], "val": [0, 1],
                        "train_fraction": [1.0, 0.0], "deviation": [0.2, -0.8]})
    assert _worst_class(bal) == "class 2, 1 image, 0.000"
    bal["name"] = ["tench", "goldfish"]
    bal["images"] = [2, 3]
    assert _worst_class(bal) == "class 2 (goldfish), 3 images, 0.000"


def test_contents_link_every_section_and_ids_are_unique(tmp_path):
    from miqd.report import Page

    page = Page(tmp_path)
    page.add(page.heading(2, "Labels (MMOS)"), page.heading(3, "Fig. 4"), "<p>x</p>", page.heading(3, "Fig. 4"),
             page.heading(2, "Splits"))
    body = page.body()
    assert body.count("<section") == body.count("</section>") == 4
    assert "<section id='labels-mmos'><h2>Labels (MMOS)</h2>" in body and "id='fig-4-2'" in body
    nav = page.contents()
    assert nav.count("<a href=") == 4 and "<li><a href='#labels-mmos'>Labels (MMOS)</a><ul><li>" in nav
    assert "<li><a href='#splits'>Splits</a></li>" in nav


def test_provenance_names_the_code_and_the_config_files(tmp_path):
    from miqd.report import Page, _provenance

    config = tmp_path / "config.yaml"
    config.write_text("outdir: x\n")
    page = Page(tmp_path)
    page.read(config)
    block = _provenance(page, "results", {"cls": {"alpha": {"resnet18": 0.5, "vit": 0.5}, "lambda": 0.5,
                                                  "random_models": ["vit"]}}, [str(config)])
    assert f"{config} (sha256 " in block and "<dd>results</dd>" in block
    assert "cls: resnet18 (α 0.5), vit (α 0.5); λ 0.5; random weights: vit" in block
    if shutil.which("git") and (Path(__file__).parents[1] / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).parents[1]).stdout.strip()
        assert f"git commit {head}" in block
    assert "(the newest input file's modification time)" in block
