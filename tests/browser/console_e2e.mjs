// The admin console end to end in real headless Chromium: sign in as a tenant admin, create a
// key, copy it, call the API with it through the `openai` Python SDK, see the request on the
// dashboard and in the usage explorer, download the CSV and check its totals, revoke the key,
// see the next call refused. Screenshots of every page go to $SHOTS.
//
// Environment: AIAAS_URL, ADMIN_EMAIL, ADMIN_PASSWORD, PYTHON (with `openai`), MODEL, SHOTS,
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { readFileSync, mkdirSync } from "node:fs";
import assert from "node:assert/strict";

const base = process.env.AIAAS_URL;
const shots = process.env.SHOTS;
mkdirSync(shots, { recursive: true });
const step = (text) => console.log(`-- ${text}`);

// One chat completion through the official SDK; returns its `usage` (or the error's status).
function callApi(key) {
  const script = `
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
try:
    r = client.chat.completions.create(model=sys.argv[3], messages=[{"role": "user", "content": "Hello from the console test"}], max_tokens=5)
    print(json.dumps({"status": 200, "usage": r.usage.model_dump()}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code}))
`;
  const out = execFileSync(process.env.PYTHON, ["-c", script, base, key, process.env.MODEL], { encoding: "utf8" });
  return JSON.parse(out.trim().split("\n").pop());
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const context = await browser.newContext({
  viewport: { width: 1280, height: 860 },
  locale: "en-US",
  timezoneId: "Europe/Berlin",
  acceptDownloads: true,
});
await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
const page = await context.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
page.on("console", (m) => {
  if (m.type() === "error") errors.push(`${m.text()} (${m.location()?.url ?? page.url()})`);
});
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

try {
  step("sign in");
  await page.goto(`${base}/admin/login`);
  await shot("01-sign-in");
  await page.fill("input[name=email]", process.env.ADMIN_EMAIL);
  await page.fill("input[name=password]", process.env.ADMIN_PASSWORD);
  await Promise.all([page.waitForURL("**/admin/dashboard"), page.click("button[type=submit]")]);
  // The script stored the browser's zone; times are now rendered in it.
  await page.reload();
  assert.equal(await page.textContent("#tz"), "Europe/Berlin");
  await shot("02-dashboard-empty");

  step("create a key and copy it");
  await page.click("nav.main >> text=API keys");
  await page.waitForURL("**/admin/keys");
  await page.click("#create-key");
  await page.fill("input[name=name]", "Checkout service <prod>");
  await page.fill("input[name=rpm]", "600");
  await shot("03-new-key");
  await page.click("button[type=submit].primary");
  await page.waitForSelector("#secret");
  await shot("04-key-shown-once");
  await page.click("#copy");
  await page.waitForFunction(() => document.querySelector("#copy").textContent === "Copied");
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  const shown = await page.inputValue("#secret");
  assert.equal(copied, shown, "the copy button copies the key");
  assert.match(copied, /^sk-aiaas-[a-z0-9]{12}-[A-Za-z0-9_-]{43}$/);
  await page.click("#done");
  assert.ok(!(await page.content()).includes(copied), "never shown again");

  step("call the API with it through the openai SDK");
  const ok = callApi(copied);
  assert.equal(ok.status, 200, JSON.stringify(ok));
  const usage = ok.usage;

  step("the request shows on the dashboard");
  let requests = "0";
  for (let i = 0; i < 60 && requests === "0"; i++) {
    await page.goto(`${base}/admin/dashboard`);
    requests = (await page.textContent(".stat .value")).trim();
    if (requests === "0") await page.waitForTimeout(250);
  }
  assert.equal(requests, "1");
  await shot("05-dashboard");

  step("and in the usage explorer");
  await page.goto(`${base}/admin/usage`);
  await page.selectOption("select[name=group]", "model");
  await Promise.all([page.waitForURL("**/admin/usage?**"), page.click("form.filters button[type=submit]")]);
  assert.ok((await page.textContent("#usage-table tbody")).includes(process.env.MODEL));
  assert.equal((await page.textContent("[data-total=requests]")).trim(), "1");
  assert.equal((await page.textContent("[data-total=tokens]")).trim(), String(usage.total_tokens));
  await shot("06-usage-explorer");

  step("download the CSV and check its totals");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("text=Download CSV")]);
  const csv = readFileSync(await download.path(), "utf8");
  const [header, ...rows] = csv.trim().split("\r\n");
  const cols = header.split(",");
  const sum = (name) => rows.reduce((s, r) => s + Number(r.split(",")[cols.indexOf(name)]), 0);
  assert.equal(sum("requests"), 1);
  assert.equal(sum("prompt_tokens"), usage.prompt_tokens);
  assert.equal(sum("completion_tokens"), usage.completion_tokens);
  assert.equal(sum("total_tokens"), usage.total_tokens);

  step("the other pages");
  await page.goto(`${base}/admin/statements`);
  await shot("07-statements");
  await page.goto(`${base}/admin/jwt-keys`);
  await shot("08-jwt-keys");
  await page.goto(`${base}/admin/audit`);
  await shot("09-audit-log");
  await page.goto(`${base}/admin/account`);
  await shot("10-account");

  step("revoke the key");
  await page.goto(`${base}/admin/keys`);
  await shot("11-keys");
  await page.click("#keys-table tbody a");
  await shot("12-key");
  await page.click("#revoke");
  await shot("13-revoke-confirm");
  await Promise.all([page.waitForURL(/\/admin\/keys\/[a-z0-9]+$/), page.click("#confirm-revoke")]);
  assert.equal((await page.textContent("#key-status")).trim(), "Revoked");
  await shot("14-key-revoked");

  step("the next call is refused");
  let refused = null;
  for (let i = 0; i < 20; i++) {
    refused = callApi(copied);
    if (refused.status === 401) break;
    await page.waitForTimeout(200);
  }
  assert.equal(refused.status, 401);

  step("the console in Chinese");
  await page.click("footer >> text=简体中文");
  await page.waitForURL("**/admin/keys/**");
  assert.equal(await page.getAttribute("html", "lang"), "zh-Hans");
  await page.goto(`${base}/admin/dashboard?range=7d`);
  await shot("15-dashboard-zh");
  // A refused form says why in Chinese too.
  await page.goto(`${base}/admin/account`);
  await page.fill("input[name=current_password]", "not the password at all");
  await page.fill("input[name=new_password]", "a brand new passphrase");
  await page.click("form[action='/admin/account/password'] button");
  await page.waitForSelector(".flash.error");
  assert.equal((await page.textContent(".flash.error")).trim(), "请检查表单：当前密码不正确");
  await shot("16-form-error-zh");
  assert.deepEqual(errors, [], "no script errors or CSP violations");
  console.log("console e2e: ok");
} finally {
  await browser.close();
}
