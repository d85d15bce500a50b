"""The web console in real headless Chromium (Debian's, driven by
Playwright), as tests/all/console.rs runs it against a devnet broker:
sign in with a password, publish a module through the form, run a job and
watch it finish over SSE without a reload, find its ledger row and the
earnings it produced, and be refused the operator's page.

Then it signs out, signs in with the operator's API key, and opens the
operator's page.

Usage: console.py URL EMAIL PASSWORD MODULE SHOTS_DIR ADMIN_API_KEY
Prints one JSON line of what it saw; exits non-zero on the first failure.
"""

import json
import sys

from playwright.sync_api import expect, sync_playwright

url, email, password, module, shots, admin_key = sys.argv[1:7]
seen = {}


def shot(page, name):
    page.screenshot(path=f"{shots}/{name}.png", full_page=True)


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    )
    page = browser.new_page()
    expect.set_options(timeout=60_000)

    # Sign in with a password.
    page.goto(f"{url}/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/console")
    expect(page.locator("header .who")).to_contain_text(email)
    # The overview's figures arrive over SSE.
    expect(page.locator("#providers")).to_have_text("2")
    shot(page, "overview")

    # Publish a module through the form.
    page.goto(f"{url}/console/services")
    page.get_by_label("Name").fill("greeter")
    page.get_by_label("Module (.wasm)").set_input_files(module)
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#publish-result")).to_contain_text("Published")
    seen["published"] = page.locator("#publish-result").inner_text()
    page.goto(f"{url}/console/services")
    expect(page.locator("table")).to_contain_text("greeter")
    shot(page, "services")

    # Run a job, and watch it end without a reload.
    page.goto(f"{url}/console/jobs")
    page.get_by_label("Service").fill("greeter")
    page.get_by_label("Standard input").fill("hello from the console")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(f"{url}/console/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    expect(page.locator("body")).to_have_attribute("data-job-done", "succeeded")
    expect(page.locator("#stdout")).to_have_text("hello from the console")
    expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#exit-code")).to_have_text("0")
    seen["job"] = job_id
    seen["events"] = page.locator("#events li").all_inner_texts()
    seen["reloads"] = len(navigations)
    assert not navigations, f"the job page navigated: {navigations}"
    assert len(seen["events"]) >= 2, seen["events"]
    shot(page, "job")
    page.goto(f"{url}/console/jobs")
    expect(page.locator("table")).to_contain_text(job_id)
    shot(page, "jobs")

    # Its ledger row, and what it earned its provider.
    page.goto(f"{url}/console/ledger")
    row = page.locator("tr", has_text=job_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("verifies")
    expect(page.locator("#audit")).to_contain_text("all verify")
    seen["row"] = row.inner_text()
    seen["audit"] = page.locator("#audit").inner_text()
    shot(page, "ledger")
    seen["provider"] = row.get_by_role("link").inner_text()
    row.get_by_role("link").click()
    expect(page.locator("#earned")).not_to_have_text("0")
    seen["provider_earned"] = page.locator("#earned").inner_text()
    shot(page, "earnings")

    # The operator's page is not for this account.
    response = page.goto(f"{url}/console/operator")
    assert response.status == 403, response.status
    expect(page.locator("main")).to_contain_text("admin")
    seen["operator_status"] = response.status
    shot(page, "operator-refused")

    # The operator, signed in with an API key that has `admin`.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{url}/console/login")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/console")
    response = page.goto(f"{url}/console/operator")
    assert response.status == 200, response.status
    expect(page.get_by_role("button", name="Approve")).to_have_count(2)
    page.get_by_role("button", name="Settle now").click()
    expect(page.locator("main")).to_contain_text("settlement run")
    seen["settled"] = page.locator("p.ok").inner_text()
    expect(page.locator("#bans")).to_contain_text("No bans")
    shot(page, "operator")
    # Settled: the provider's earnings now show as paid out.
    page.goto(f"{url}/console/earnings?account={seen['provider']}")
    expect(page.locator("#settlements")).to_contain_text(f"{seen['provider_earned']} paid out")
    seen["settlements"] = page.locator("#settlements").inner_text()
    shot(page, "earnings-settled")
    page.goto(f"{url}/console/providers")
    expect(page.locator("tbody tr")).to_have_count(2)
    shot(page, "providers")

    browser.close()

print(json.dumps(seen))
