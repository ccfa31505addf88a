"""The administrator's console in a real browser (headless Chromium from Debian's packages,
driven by Playwright for Python). Started by tests/suite/browser.rs against the real server on a
free port; exits non-zero on the first failure.

Usage: console.py BASE ADMIN_TOKEN VENDOR_TOKEN SAMPLE_JSON SCREENSHOT_DIR

It signs in, sees a posted E3 delivery and its F-codes in a table, opens a record and sees each
recipient's fields with their actions, breaks a mapping in the editor and sees the problem's
line, fixes it, previews the draft side by side, deploys it, sees the new version serve a
delivery, rolls back, pauses and resumes a push lane, sees non-zero counts in the overview and
switches to English. Every page load is checked for console errors and CSP violations, and each
view is photographed at 1280 x 800 and at 400 px wide and checked for a horizontal scrollbar.
"""

import json
import os
import sys
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, ADMIN, VENDOR, SAMPLE, SHOTS = sys.argv[1:6]
CHROMIUM = os.environ.get("WEICHE_CHROMIUM", "/usr/bin/chromium")
VIEWS = ["overview", "deliveries", "recipients", "mappings", "subject", "audit"]
TIMEOUT = 15_000


def call(method, path, token, body=None, content_type=None):
    req = urllib.request.Request(BASE + path, method=method, data=body)
    req.add_header("Authorization", "Bearer " + token)
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def step(text):
    print("·", text, flush=True)


def main():
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="de-DE")
        context.set_default_timeout(TIMEOUT)
        # CSP violations as the page sees them (init scripts are not subject to the policy).
        context.add_init_script(
            "window.__csp = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        page = context.new_page()
        page.on("console", lambda m: problems.append("console: " + m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append("page error: " + str(e)))
        page.on("dialog", lambda d: d.accept())
        page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

        def clean(where):
            csp = page.evaluate("window.__csp || []")
            if csp:
                problems.append(f"{where}: CSP violations {csp}")
            if problems:
                raise SystemExit("FAILED at " + where + ":\n" + "\n".join(problems))

        def no_horizontal_scrollbar(where):
            wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            if wide > 0:
                offenders = page.evaluate(
                    "[...document.querySelectorAll('body *')]"
                    ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
                    ".slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"
                )
                raise SystemExit(f"FAILED: {where} is {wide} px too wide: {offenders}")

        # --- sign in ---------------------------------------------------------------------
        step("sign in")
        page.goto(BASE + "/admin/")
        expect(page.locator("nav a[href='#overview']")).to_have_text("Übersicht")
        page.fill("#token", ADMIN)
        page.click("#signin button[type=submit]")
        expect(page.locator("#who")).to_have_text("Angemeldet als admin")
        clean("sign-in")

        # --- overview with non-zero counts ----------------------------------------------
        step("overview counts")
        expect(page.locator("#kpi-deliveries")).not_to_have_text("–")
        expect(page.locator("#kpi-deliveries")).not_to_have_text("0")
        expect(page.locator("#kpi-received")).not_to_have_text("0")
        assert page.locator("#chart-series svg rect.bar").count() > 0, "no bars in the chart"
        assert page.locator("#chart-codes svg rect.bar").count() > 0, "no code bars"
        clean("overview")

        # --- the E3 delivery and its F-codes ---------------------------------------------
        step("E3 delivery with F-codes")
        os.makedirs(SHOTS, exist_ok=True)
        page.click("nav a[href='#deliveries']")
        e3 = page.locator("#deliveries-table tr.delivery", has=page.locator(".badge.s-E3"))
        expect(e3).to_have_count(1)
        e3.locator("button.open-delivery").click()
        entries = page.locator("#entries-table tbody tr.entry")
        expect(entries.first).to_be_visible()
        codes = page.locator("#entries-table tbody td .mono").all_text_contents()
        assert "F001" in codes, f"F001 not among {codes}"
        page.screenshot(path=os.path.join(SHOTS, "receipt-1280.png"))
        page.select_option("#entries-code", "F001")
        expect(page.locator("#entries-table tbody tr.entry").first).to_contain_text("F001")
        shown = page.locator("#entries-table tbody td .mono").all_text_contents()
        assert shown and set(shown) == {"F001"}, f"filtered by F001: {shown}"
        clean("receipt")

        # --- a record and each recipient's fields with their actions ---------------------
        step("record view")
        page.fill("#r-vendor", "demo-vendor")
        page.fill("#r-id", "JH-2026-0417")
        page.click("#record-form button[type=submit]")
        views = page.locator("#record-out .recipient-view")
        expect(views.first).to_be_visible()
        assert views.count() >= 1
        first = views.first
        expect(first.locator("h4")).to_contain_text("statistik-nrw")
        actions = first.locator("table.fields-table tbody tr td:nth-child(2)").all_text_contents()
        assert actions and all(a for a in actions), f"actions {actions}"
        assert any(a in ("keep", "pseudonymise") or a.startswith("generalise") for a in actions), actions
        clean("record")

        # --- the mapping editor: break, fix, preview, diff, deploy, serve, roll back -------
        step("mapping editor: break")
        page.click("nav a[href='#mappings']")
        page.select_option("#editor-format", "klidas-json")
        page.click("#editor-open button[type=submit]")
        editor = page.locator("#editor-text")
        expect(editor).not_to_have_value("")
        original = editor.input_value()
        original_version = call("GET", "/api/v1/admin/mappings/klidas-json/source", ADMIN)["version"]
        lines = original.split("\n")
        broken = "\n".join(lines[:2] + ["= kaputt"] + lines[2:])
        editor.fill(broken)
        expect(page.locator("#editor-problems li").first).to_contain_text("Zeile 3")
        clean("editor broken")

        step("mapping editor: fix, preview, diff")
        fixed = original.replace('description = "', 'description = "Entwurf: ', 1)
        assert fixed != original
        editor.fill(fixed)
        expect(page.locator("#editor-status")).to_have_text("Keine Probleme – der Entwurf lässt sich laden.")
        with open(SAMPLE, encoding="utf-8") as f:
            page.fill("#sample-text", f.read())
        page.click("#draft-preview")
        expect(page.locator("#preview-side")).to_be_visible()
        expect(page.locator("#side-records")).to_contain_text("client")
        expect(page.locator("#side-views")).to_contain_text("statistik-nrw")
        expect(page.locator("#side-input")).to_contain_text("klidas")
        page.click("#editor-diff")
        expect(page.locator("#diff-out .add")).to_contain_text("Entwurf: ")
        expect(page.locator("#diff-out .del")).to_have_count(1)
        clean("preview")

        step("mapping editor: deploy")
        page.click("#editor-deploy")
        expect(page.locator("#preview-status")).to_contain_text("ist in Betrieb")
        new_version = call("GET", "/api/v1/admin/mappings/klidas-json/source", ADMIN)["version"]
        assert new_version != original_version
        with open(SAMPLE, "rb") as f:
            body = f.read().replace(b"9c0e4b7a-1f2d-4e3c-a5b6-c7d8e9f0a1b2", b"9c0e4b7a-1f2d-4e3c-a5b6-c7d8e9f0a1b3")
        receipt = call("POST", "/api/v1/deliveries?format=klidas-json", VENDOR, body, "application/json")
        assert receipt["mapping_version"] == new_version, receipt
        expect(page.locator("#versions-table tbody tr.current")).to_contain_text("admin")
        clean("deploy")

        step("mapping editor: roll back")
        page.locator("#versions-table button.rollback").first.click()
        expect(page.locator("#preview-status")).to_contain_text(f"Version {original_version[:12]}… ist in Betrieb")
        assert call("GET", "/api/v1/admin/mappings/klidas-json/source", ADMIN)["version"] == original_version
        expect(editor).to_have_value(original)
        clean("rollback")

        # --- pause and resume a push lane ------------------------------------------------
        step("push lane")
        page.click("nav a[href='#recipients']")
        row = page.locator("#recipients-table tr.recipient", has_text="jobcenter-test")
        row.locator("button.open-recipient").click()
        page.click("#lane-pause")
        expect(page.locator("#lane-status")).to_contain_text("angehalten")
        assert call("GET", "/api/v1/admin/recipients/jobcenter-test", ADMIN)["push"]["paused"] is True
        page.click("#lane-resume")
        expect(page.locator("#lane-status")).to_contain_text("läuft wieder")
        assert call("GET", "/api/v1/admin/recipients/jobcenter-test", ADMIN)["push"]["paused"] is False
        clean("lane")

        # --- audit and data-subject views load ------------------------------------------
        step("audit events")
        page.click("nav a[href='#audit']")
        expect(page.locator("#events-table tbody tr").first).to_be_visible()
        kinds = page.locator("#events-table tbody td:nth-child(3)").all_text_contents()
        assert "mapping_deployed" in kinds and "lane_paused" in kinds, kinds
        page.click("#audit-verify")
        expect(page.locator("#audit-status")).to_have_text("Die Kette ist unversehrt.")
        clean("audit")

        # --- every view at 1280 x 800 and at 400 px --------------------------------------
        step("screenshots")
        os.makedirs(SHOTS, exist_ok=True)
        for width, height in [(1280, 800), (400, 800)]:
            page.set_viewport_size({"width": width, "height": height})
            for view in VIEWS:
                page.goto(f"{BASE}/admin/#{view}")
                expect(page.locator(f"#view-{view}")).to_be_visible()
                page.wait_for_load_state("networkidle")
                no_horizontal_scrollbar(f"{view} at {width} px")
                page.screenshot(path=os.path.join(SHOTS, f"{view}-{width}.png"), full_page=width == 400)
                clean(f"{view} at {width} px")

        # --- the rendered API documentation ----------------------------------------------
        step("API documentation")
        page.set_viewport_size({"width": 1280, "height": 800})
        page.goto(BASE + "/api/v1/docs")
        expect(page.locator("#docs-ops details.op").first).to_be_visible()
        assert page.locator("#docs-ops details.op").count() > 30
        no_horizontal_scrollbar("docs")
        clean("docs")

        # --- English ---------------------------------------------------------------------
        step("English")
        page.goto(BASE + "/admin/#overview")
        expect(page.locator("#who")).to_have_text("Angemeldet als admin")
        page.select_option("#lang", "en")
        expect(page.locator("nav a[href='#overview']")).to_have_text("Overview")
        expect(page.locator("#who")).to_have_text("Signed in as admin")
        assert page.evaluate("document.documentElement.lang") == "en"
        page.reload()
        expect(page.locator("nav a[href='#deliveries']")).to_have_text("Deliveries")
        page.screenshot(path=os.path.join(SHOTS, "overview-en-1280.png"))
        clean("English")
        browser.close()
    print("browser tests passed", flush=True)


if __name__ == "__main__":
    main()
