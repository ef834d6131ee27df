"""The playground (GET /playground, docs/PLAYGROUND.md), opened in headless Chromium against a real
server: what the page draws is read back from the DOM and checked against closed forms.

The browser is Debian's `chromium` driven through its `chromedriver` (installed by .ci/run); the
tests that need it skip, saying so, where they are not installed. Every request the page makes is
recorded from the browser's network log and must go to the server's own origin. With
NABLA_PLAYGROUND_SCREENSHOT=<path> the main test also writes its screenshot there (that is how
docs/img/playground.png was made).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ASSETS = REPO / "service" / "static" / "playground"
KEY = "playground-key"

pytestmark = pytest.mark.slow  # a real server and a browser: about 15 s in all


def f(x: float) -> float:
    return x * x * math.sin(x)


def df(x: float) -> float:
    return 2 * x * math.sin(x) + x * x * math.cos(x)


def d2f(x: float) -> float:
    return (2 - x * x) * math.sin(x) + 4 * x * math.cos(x)


CLOSED_FORMS: dict[str, Callable[[float], float]] = {"f": f, "df": df, "d2f": d2f}


# ----------------------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them: "
                    "apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1020", "--force-device-scale-factor=1", "--hide-scrollbars",
                     "--no-first-run", "--disable-extensions", "--disable-sync", "--disable-default-apps",
                     "--disable-background-networking", "--disable-component-update"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # The driver is given: Selenium never looks for (or downloads) a driver or a browser.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(serve_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serve_module(tmp_path_factory.mktemp("playground"), {}) as running:
        yield running


def requests_made(driver: Any) -> list[dict[str, Any]]:
    """The requests the page sent since the last call, from the browser's network log."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            request = message["params"]["request"]
            sent.append({"url": request["url"], "method": request["method"], "headers": request["headers"]})
    return sent


def open_page(driver: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/playground")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def fill(driver: Any, element_id: str, text: str) -> None:
    """Type into a field as a user does (select all, type, leave the field)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.ID, element_id)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(text)
    field.send_keys(Keys.TAB)


def press_plot(driver: Any) -> str:
    """Click Plot and wait for every section; returns the run's final state (done or error)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.getElementById('results').dataset.state = ''")
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.ID, "results").get_attribute("data-state") in ("done", "error"))
    return driver.find_element(By.ID, "results").get_attribute("data-state")


def plot(driver: Any, expr: str, params: str, x_range: tuple[float, float],
         y_range: tuple[float, float] | None = None) -> str:
    fill(driver, "expr", expr)
    fill(driver, "params", params)
    fill(driver, "x-from", str(x_range[0]))
    fill(driver, "x-to", str(x_range[1]))
    if y_range is not None:
        fill(driver, "y-from", str(y_range[0]))
        fill(driver, "y-to", str(y_range[1]))
    return press_plot(driver)


def attribute_json(element: Any, name: str) -> Any:
    return json.loads(element.get_attribute(name))


def path_vertices(d: str) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[0::2], numbers[1::2]))


def offset_from_centre(driver: Any, svg: Any, user_x: float, user_y: float) -> tuple[int, int]:
    """Where a point of the SVG's own coordinates is on screen, from the element's centre (as
    Selenium's pointer offsets are), through the browser's own transform of the SVG."""
    x, y, cx, cy = driver.execute_script(
        "const [svg, x, y] = arguments; const p = svg.createSVGPoint(); p.x = x; p.y = y;"
        "const q = p.matrixTransform(svg.getScreenCTM()); const r = svg.getBoundingClientRect();"
        "return [q.x, q.y, r.left + r.width / 2, r.top + r.height / 2];", svg, user_x, user_y)
    return round(x - cx), round(y - cy)


@pytest.fixture(scope="module")
def first_plot(browser: Any, server: Any) -> dict[str, Any]:
    """Plotting sin(x) * x**2 over [-3, 3] on a fresh page: its final state and the requests it made."""
    open_page(browser, server.url)
    requests_made(browser)  # the page itself and the model list: checked on their own below
    state = plot(browser, "sin(x) * x**2", "x", (-3, 3))
    return {"state": state, "requests": requests_made(browser)}


@pytest.fixture
def plotted(browser: Any, server: Any, first_plot: dict[str, Any]) -> dict[str, Any]:
    """The page showing that plot (plotted again when another test drew something else since)."""
    shown = browser.execute_script(
        "return document.getElementById('expr').value === 'sin(x) * x**2' && "
        "document.getElementById('results').dataset.state === 'done' && "
        "document.getElementById('vary-y').value === ''")
    if not (browser.current_url.startswith(server.url + "/") and shown):
        open_page(browser, server.url)
        assert plot(browser, "sin(x) * x**2", "x", (-3, 3)) == "done"
    requests_made(browser)
    return first_plot


# ----------------------------------------------------------------------------- the one-variable plot

def test_f_and_its_derivatives_are_drawn_with_the_right_values(browser: Any, plotted: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    assert plotted["state"] == "done", browser.find_element(By.ID, "error").text
    svg = browser.find_element(By.CSS_SELECTOR, "#plot-area svg")
    xs = attribute_json(svg, "data-xs")
    assert len(xs) == 201 and xs[0] == -3 and xs[-1] == 3
    left, top, width, height = attribute_json(svg, "data-box")
    (x0, x1), (y0, y1) = attribute_json(svg, "data-x-domain"), attribute_json(svg, "data-y-domain")
    for name, closed_form in CLOSED_FORMS.items():
        series = browser.find_element(By.CSS_SELECTOR, f'path[data-series="{name}"]')
        values = attribute_json(series, "data-values")
        for k in (0, 17, 100, 150, 183, 200):
            assert values[k] == pytest.approx(closed_form(xs[k]), rel=1e-12, abs=1e-12), (name, xs[k])
        # the line on screen: every vertex, mapped back through the plot's scales, is on the curve
        vertices = path_vertices(series.get_attribute("d"))
        assert len(vertices) == len(xs)
        for (px, py), x in zip(vertices, xs):
            assert x0 + (px - left) / width * (x1 - x0) == pytest.approx(x, abs=0.006 * (x1 - x0) / width)
            drawn = y1 - (py - top) / height * (y1 - y0)
            assert drawn == pytest.approx(closed_form(x), abs=0.006 * (y1 - y0) / height), (name, x)


def test_the_point_under_the_cursor_shows_the_three_values(browser: Any, plotted: dict[str, Any]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    svg = browser.find_element(By.CSS_SELECTOR, "#plot-area svg")
    left, top, width, height = attribute_json(svg, "data-box")
    user_x, user_y = left + (1.5 + 3) / 6 * width, top + height / 2  # x = 1.5, mid-height
    ActionChains(browser).move_to_element_with_offset(svg, *offset_from_centre(browser, svg, user_x, user_y)).perform()
    readout = browser.find_element(By.ID, "readout")
    x = float(readout.get_attribute("data-x"))
    assert x == pytest.approx(1.5, abs=0.031)  # the sample under the pointer: 1.5 or a neighbour
    for name, closed_form in CLOSED_FORMS.items():
        assert float(readout.get_attribute(f"data-{name}")) == pytest.approx(closed_form(x), rel=1e-12)
    shown = readout.text  # the values as people read them: 6 significant digits
    for label, closed_form in (("x", lambda x: x), ("f", f), ("f′", df), ("f″", d2f)):
        assert f"{label} = {closed_form(x):.6g}".replace("-", "−") in shown, shown


def test_the_page_asks_only_its_own_server(browser: Any, server: Any, plotted: dict[str, Any]) -> None:
    urls = [r["url"] for r in plotted["requests"]]
    assert all(url.startswith(server.url + "/") for url in urls), urls
    paths = [url[len(server.url):] for url in urls]
    # the curves (two batched jvp requests), the graph of orders 1-4, the check
    assert paths.count("/v1/jvp") == 2 and paths.count("/v1/graph") == 4 and paths.count("/v1/check_grads") == 1
    # and the page itself, from the same origin, with its files
    browser.get_log("performance")
    browser.refresh()
    open_page(browser, server.url)
    loaded = requests_made(browser)
    assert all(r["url"].startswith(server.url + "/") for r in loaded), loaded
    assert {server.url + "/playground", server.url + "/playground/playground.js",
            server.url + "/playground/plot.js", server.url + "/v1/models?limit=1000"} <= {r["url"] for r in loaded}


# ----------------------------------------------------------------------------- the graph and the check

def test_the_derivatives_graph_and_its_node_counts_are_drawn(browser: Any, server: Any,
                                                            plotted: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    expected = {}
    for order in (1, 2, 3, 4):
        body = {"function": {"expr": "sin(x) * x**2", "params": ["x"]}, "args": [1.0], "argnums": 0, "order": order}
        expected[order] = httpx.post(server.url + "/v1/graph", json=body, timeout=30).json()["nodes"]
    rows = browser.find_elements(By.CSS_SELECTOR, "#graph-counts tr[data-order]")
    assert [int(r.get_attribute("data-order")) for r in rows] == [1, 2, 3, 4]
    for row in rows:
        counts = expected[int(row.get_attribute("data-order"))]
        assert int(row.get_attribute("data-traced")) == counts["traced"]
        assert int(row.get_attribute("data-optimised")) == counts["optimised"]
        assert row.text.split() == [row.get_attribute("data-order"), str(counts["function"]), str(counts["traced"]),
                                    str(counts["optimised"])]
    for order in (1, 2):
        rows[order - 1].click()
        diagram = browser.find_element(By.CSS_SELECTOR, "#graph-area svg.graph")
        assert int(diagram.get_attribute("data-nodes")) == expected[order]["optimised"]
        ops = [g.get_attribute("data-op") for g in diagram.find_elements(By.CSS_SELECTOR, "g.node")]
        assert ops.count("param") == 1 and len([o for o in ops if o not in ("param", "const")]) == \
            expected[order]["optimised"]
        assert {"sin", "cos"} <= set(ops)
        assert "f64[]" in diagram.text  # each node shows its shape
        assert len(diagram.find_elements(By.CSS_SELECTOR, "g.node.output")) == 1
    rows[0].click()


def test_the_check_grads_report_has_every_order_and_mode(browser: Any, plotted: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    verdict = browser.find_element(By.CSS_SELECTOR, "#check .verdict")
    assert verdict.get_attribute("data-passed") == "true"
    rows = browser.find_elements(By.CSS_SELECTOR, "#check tr[data-order]")
    seen = {(int(r.get_attribute("data-order")), r.get_attribute("data-mode")): r for r in rows}
    assert set(seen) == {(1, "fwd"), (2, "fwd"), (1, "rev"), (2, "rev")}  # order 2 is the page's default
    assert all(r.get_attribute("data-passed") == "true" and r.text.endswith("pass") for r in rows)


def test_a_screenshot_of_the_plot(browser: Any, plotted: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, '#graph-counts tr[data-order="2"]').click()  # f'' as a graph
    window = browser.get_window_size()
    frame = window["height"] - browser.execute_script("return window.innerHeight")
    browser.set_window_size(1400, browser.execute_script("return document.documentElement.scrollHeight") + frame)
    try:
        svg = browser.find_element(By.CSS_SELECTOR, "#plot-area svg")
        ActionChains(browser).move_to_element_with_offset(svg, int(svg.rect["width"] * 0.27), 0).perform()
        shot = tmp_path / "playground.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(window["width"], window["height"])
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 1400  # the window's width, at one pixel per CSS pixel
    target = os.environ.get("NABLA_PLAYGROUND_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


# ----------------------------------------------------------------------------- two variables

def test_a_function_of_two_variables_is_a_map_with_its_gradient_field(browser: Any, plotted: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By

    assert plot(browser, "sin(x) * cos(y)", "x, y", (-3, 3), (-2, 2)) == "done"
    svg = browser.find_element(By.CSS_SELECTOR, "#plot-area svg")
    left, top, width, height = attribute_json(svg, "data-box")
    (u0, u1), (v0, v1) = attribute_json(svg, "data-x-domain"), attribute_json(svg, "data-y-domain")
    assert (u0, u1, v0, v1) == (-3, 3, -2, 2)
    cells = svg.find_elements(By.CSS_SELECTOR, '[data-series="f"] rect')
    assert len(cells) == 41 * 41
    for cell in cells[::97]:
        u, v = float(cell.get_attribute("data-u")), float(cell.get_attribute("data-v"))
        assert float(cell.get_attribute("data-value")) == pytest.approx(math.sin(u) * math.cos(v), rel=1e-12, abs=1e-15)
    assert svg.find_elements(By.CSS_SELECTOR, '[data-series="contours"] path')
    arrows = svg.find_elements(By.CSS_SELECTOR, '[data-series="grad"] line')
    assert len(arrows) == 10 * 10
    kx, ky = width / (u1 - u0), height / (v1 - v0)  # pixels per unit
    drawn = 0
    for arrow in arrows:
        u, v = float(arrow.get_attribute("data-u")), float(arrow.get_attribute("data-v"))
        du, dv = float(arrow.get_attribute("data-du")), float(arrow.get_attribute("data-dv"))
        assert du == pytest.approx(math.cos(u) * math.cos(v), rel=1e-12, abs=1e-15)
        assert dv == pytest.approx(-math.sin(u) * math.sin(v), rel=1e-12, abs=1e-15)
        x1, y1, x2, y2 = (float(arrow.get_attribute(a)) for a in ("x1", "y1", "x2", "y2"))
        length = math.hypot(x2 - x1, y2 - y1)
        if length > 2:  # the arrow points along the gradient (screen y grows downwards)
            gx, gy = du * kx, -dv * ky
            assert ((x2 - x1) * gx + (y2 - y1) * gy) / (length * math.hypot(gx, gy)) == pytest.approx(1, abs=1e-3)
            drawn += 1
    assert drawn > 50


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("expr, line, column, offset", [
    ("sin(x) * foo(x)", 1, 10, 9),
    ("y = sin(x)\ny * foo(x)", 2, 5, 15),
])
def test_an_invalid_expression_shows_its_error_at_its_column(browser: Any, plotted: dict[str, Any], expr: str,
                                                             line: int, column: int, offset: int) -> None:
    from selenium.webdriver.common.by import By

    assert plot(browser, expr, "x", (-3, 3)) == "error"
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "unknown function 'foo'" in error.text
    assert (error.get_attribute("data-line"), error.get_attribute("data-column")) == (str(line), str(column))
    quoted = error.find_element(By.CSS_SELECTOR, "mark")
    assert quoted.text == "f" and quoted.get_attribute("data-column") == str(column)
    in_editor = browser.find_element(By.ID, "error-mark")  # behind the textarea, over the same character
    assert in_editor.get_attribute("textContent") == "f"
    editor = browser.find_element(By.ID, "expr")
    assert browser.execute_script("return arguments[0].selectionStart", editor) == offset
    assert expr[offset] == "f"
    box, mark = editor.rect, in_editor.rect
    assert box["x"] < mark["x"] < box["x"] + box["width"] and box["y"] < mark["y"] < box["y"] + box["height"]


# ----------------------------------------------------------------------------- a keyed server

def test_a_keyed_server_works_with_the_key_field(browser: Any, start_server: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    keyed = start_server({"NABLA_API_KEYS": KEY})
    open_page(browser, keyed.url)
    assert "API key" in browser.find_element(By.ID, "model").get_attribute("textContent")  # the list needs the key
    assert plot(browser, "sin(x) * x**2", "x", (-3, 3)) == "error"
    assert "requires an API key" in browser.find_element(By.ID, "error").text
    requests_made(browser)
    fill(browser, "api-key", KEY)
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.ID, "controls").get_attribute("data-models") not in (None, "", "0"))
    assert press_plot(browser) == "done"
    values = attribute_json(browser.find_element(By.CSS_SELECTOR, 'path[data-series="df"]'), "data-values")
    assert values[150] == pytest.approx(df(1.5), rel=1e-12)
    api = [r for r in requests_made(browser) if "/v1/" in r["url"]]
    assert len(api) >= 8 and all(r["url"].startswith(keyed.url + "/") for r in api)
    assert all(r["headers"].get("Authorization") == f"Bearer {KEY}" for r in api)
    # the key is in this tab's sessionStorage only: not in localStorage, not in a cookie
    assert browser.execute_script("return sessionStorage.getItem('nabla.apiKey')") == KEY
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.execute_script("return document.cookie") == ""


# ----------------------------------------------------------------------------- serving the files

def test_the_page_and_its_files_are_served_with_a_same_origin_policy(server: Any) -> None:
    page = httpx.get(server.url + "/playground", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    for path in sorted(ASSETS.iterdir()):
        if path.name == "index.html":
            continue
        served = httpx.get(f"{server.url}/playground/{path.name}", timeout=10)
        assert served.status_code == 200 and served.content == path.read_bytes(), path.name
    for name in ("missing.js", "..%2Fapp.py", "index.html"):
        refused = httpx.get(f"{server.url}/playground/{name}", timeout=10)
        assert refused.status_code == 404 and refused.json()["error"]["type"] == "not_found"
    # nothing in the page names another origin
    for path in ASSETS.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:https?:)?//[a-z0-9]", text.replace("http://www.w3.org/2000/svg", "")), path.name


def test_a_built_wheel_ships_the_playground(tmp_path: Path) -> None:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: the wheel cannot be built offline")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("engine", "service", "client"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    with contextlib.chdir(tmp_path):
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                        "--wheel-dir", str(tmp_path / "wheels"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "wheels").glob("nabla-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"service/static/playground/{p.name}" for p in ASSETS.iterdir()}
    assert expected <= shipped, expected - shipped
