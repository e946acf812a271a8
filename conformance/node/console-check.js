// console-check.js drives the operator console in a real browser
// (headless Chromium, the system's, through playwright-core) for
// conformance/console_test.go. It reads its task as JSON on stdin:
//
//   { "url": "http://127.0.0.1:PORT", "metricsURL": "http://.../metrics",
//     "chromium": "/usr/bin/chromium", "user": "...", "password": "...",
//     "study": "UID sent a moment ago", "sops": ["UID", ...] (that study's),
//     "retryOne": "SOP UID of a dead letter to retry alone",
//     "total": number of objects sent (each a dead letter of "down"),
//     "up": "destination that takes everything", "down": "destination that is down",
//     "callingAE": "AE title the objects came from",
//     "forbidden": ["patient names and IDs of what was sent"],
//     "artifacts": "directory for the screenshots" }
//
// and checks what the test cannot check from outside the browser: the
// login, the overview's numbers against /metrics, Find, a dead letter
// retried from the page, the refusals of actions without a session or
// token, and that no page or URL holds patient data. Each check is printed
// as a JSON line {"check": ..., "ok": true|false, ...}; the exit status is
// 1 when one failed. The Go test waits for the destination to be back
// before running it, and checks the delivery at the destination itself.
"use strict";

const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

function readStdin() {
  return new Promise((resolve, reject) => {
    let data = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (c) => (data += c));
    process.stdin.on("end", () => resolve(JSON.parse(data)));
    process.stdin.on("error", reject);
  });
}

let failed = 0;
function report(check, ok, details) {
  if (!ok) failed++;
  process.stdout.write(JSON.stringify(Object.assign({ check, ok }, details || {})) + "\n");
}

// parseMetrics reads the text exposition format: series -> value.
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

async function scrape(url) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`GET ${url}: ${resp.status}`);
  return parseMetrics(await resp.text());
}

async function main() {
  const task = await readStdin();
  fs.mkdirSync(task.artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: task.chromium,
    headless: true,
    // Root in a container: Chromium's sandbox needs user namespaces.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const visited = new Set();
  const pagesSeen = []; // [name, html]
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    page.on("request", (r) => visited.add(r.url()));
    page.on("pageerror", (e) => report("no script errors", false, { error: String(e) }));

    // Every token the pages carry is random: it is no patient data, and
    // is left out of the search (a short patient ID could occur in one).
    async function keep(name) {
      let html = await page.content();
      const tokens = await page.$$eval("input[name=csrf], input[name=login_token]", (els) => els.map((e) => e.value));
      for (const t of tokens) html = html.split(t).join("");
      pagesSeen.push([name, html]);
      await page.screenshot({ path: path.join(task.artifacts, name + ".png"), fullPage: true });
    }

    // Login: anything asked for without a session goes to the login page.
    await page.goto(task.url + "/dead");
    report("no session: the login page", new URL(page.url()).pathname === "/login", { url: page.url() });
    await page.fill("input[name=username]", task.user);
    await page.fill("input[name=password]", task.password + "-wrong");
    await Promise.all([page.waitForLoadState(), page.click("button[type=submit]")]);
    const wrong = await page.textContent("main");
    report("a wrong password is refused", /Unknown user or wrong password/.test(wrong) && new URL(page.url()).pathname === "/login");
    await keep("01-login-refused");
    await page.fill("input[name=username]", task.user);
    await page.fill("input[name=password]", task.password);
    await Promise.all([page.waitForURL((u) => u.pathname === "/dead"), page.click("button[type=submit]")]);
    report("login goes where it was asked for", new URL(page.url()).pathname === "/dead", { url: page.url() });

    // Overview: every number is the /metrics series it names.
    await page.goto(task.url + "/");
    await keep("02-overview");
    const shown = await page.$$eval("[data-metric], [data-increase]", (els) =>
      els.map((e) => ({
        metric: e.getAttribute("data-metric"),
        increase: e.getAttribute("data-increase"),
        value: Number(e.getAttribute("data-value")),
        window: Number(e.getAttribute("data-window") || "0"),
        kind: e.getAttribute("data-kind") || "",
        text: e.textContent.trim(),
      })),
    );
    const metrics = await scrape(task.metricsURL);
    const mismatches = [];
    for (const s of shown) {
      const key = s.metric || s.increase;
      if (!metrics.has(key)) {
        mismatches.push({ key, why: "not in /metrics" });
        continue;
      }
      const want = metrics.get(key);
      let ok;
      if (s.kind === "age") ok = Math.abs(want - s.value) <= 30;
      else if (s.kind === "volatile") ok = true; // free bytes, associations in progress: they move
      else if (s.increase) ok = s.window < 3600 ? want === s.value : want >= s.value;
      else ok = want === s.value;
      if (!ok) mismatches.push({ key, page: s.value, metrics: want });
    }
    report("the overview shows what /metrics says", mismatches.length === 0 && shown.length >= 20, { numbers: shown.length, mismatches });
    const upRow = await page.$eval(`tr[data-destination="${task.up}"] .badge`, (e) => e.textContent.trim());
    const downRow = await page.$eval(`tr[data-destination="${task.down}"] .badge`, (e) => e.textContent.trim());
    const lastFailure = await page.$eval(`tr[data-destination="${task.down}"] .last-failure`, (e) => e.textContent.trim()).catch(() => "");
    const downDead = await page.$eval(`tr[data-destination="${task.down}"] [data-metric^="dicomgw_destination_dead_objects"]`, (e) => Number(e.getAttribute("data-value")));
    report("the overview: one destination up, the other failing with its dead letters", upRow === "up" && downRow === "failing" && downDead === task.total && /connection refused/.test(lastFailure), {
      lastFailure,
      up: upRow,
      down: downRow,
      dead: downDead,
    });

    // It refreshes by itself (the only script).
    const before = await page.textContent("#as-of");
    await page.waitForFunction((b) => document.getElementById("as-of").textContent !== b, before, { timeout: 15000 });
    report("the overview refreshes by itself", true);

    // Find: the study sent a moment ago, with each destination's state.
    await page.click("nav >> text=Find");
    await page.fill("input[name=study]", task.study);
    await Promise.all([page.waitForURL((u) => u.pathname === "/find" && u.search !== ""), page.click("form.find button[type=submit]")]);
    await keep("03-find");
    // An object found is a section of its own (one) or a row (several);
    // either way its deliveries carry their destination and state.
    const readFound = () =>
      page.$$eval("[data-sop].object", (objs) =>
        objs.map((s) => ({
          sop: s.getAttribute("data-sop"),
          text: s.textContent,
          states: Object.fromEntries([...s.querySelectorAll(".delivery")].map((r) => [r.getAttribute("data-destination"), r.getAttribute("data-state")])),
        })),
      );
    const statesOK = (found) => found.every((f) => f.states[task.up] === "delivered" && f.states[task.down] === "dead" && f.text.includes(task.callingAE));
    let found = await readFound();
    const foundSOPs = found.map((f) => f.sop).sort();
    report("Find shows the study with its per-destination states", JSON.stringify(foundSOPs) === JSON.stringify([...task.sops].sort()) && statesOK(found), { found });

    // Everything from the sender: a list, with a count per destination.
    await page.goto(task.url + "/find?calling=" + encodeURIComponent(task.callingAE));
    await keep("03-find-calling-ae");
    found = await readFound();
    const summary = await page.$eval(`tr.dest-summary[data-destination="${task.down}"]`, (r) => [...r.querySelectorAll("td")].map((c) => c.textContent.trim()).join(" ")).catch(() => "");
    report("Find by calling AE lists every object with its states and a summary", found.length === task.total && statesOK(found) && summary === `${task.down} 0 0 ${task.total}`, {
      found: found.length,
      summary,
    });

    // Dead letters: retry one from the page, with its confirmation.
    await page.click("nav >> text=Dead letters");
    await keep("04-dead-letters");
    const letters = await page.$$eval("tr.letter", (rows) => rows.map((r) => ({ sop: r.getAttribute("data-sop"), dest: r.getAttribute("data-destination") })));
    report("every dead letter is listed", letters.filter((l) => l.dest === task.down).length === task.total, { letters });
    await page.check(`tr.letter[data-sop="${task.retryOne}"] input[type=checkbox]`);
    await Promise.all([page.waitForURL((u) => u.pathname === "/dead/confirm"), page.click("text=Retry selected")]);
    await keep("05-confirm");
    const confirmRows = await page.$$eval("tr.letter", (rows) => rows.length);
    report("a retry asks for confirmation first", confirmRows === 1 && /Retry 1 dead letter/.test(await page.textContent("h1")));
    await Promise.all([page.waitForURL((u) => u.pathname === "/dead"), page.click("button[name=confirm]")]);
    const flash = (await page.textContent(".flash")) || "";
    report("the retry is done", /Re-queued 1 dead letter/.test(flash), { flash });
    await keep("06-retried");

    // Delivered once the destination is back (it is): Find says so.
    let delivered = false;
    for (let i = 0; i < 60 && !delivered; i++) {
      await page.goto(task.url + "/find?sop=" + encodeURIComponent(task.retryOne));
      const st = await page.$eval(`tr.delivery[data-destination="${task.down}"]`, (r) => r.getAttribute("data-state")).catch(() => "");
      delivered = st === "delivered";
      if (!delivered) await page.waitForTimeout(500);
    }
    await keep("07-retried-delivered");
    report("the retried dead letter is delivered", delivered);

    // The rest: every one with that reason, from its group.
    await page.goto(task.url + "/dead");
    await Promise.all([page.waitForURL((u) => u.pathname === "/dead/confirm"), page.click(`tr.reason[data-destination="${task.down}"] button[value=retry]`)]);
    const rest = await page.$$eval("tr.letter", (rows) => rows.length);
    await Promise.all([page.waitForURL((u) => u.pathname === "/dead"), page.click("button[name=confirm]")]);
    const flash2 = (await page.textContent(".flash")) || "";
    report("retry all of one reason", rest === task.total - 1 && new RegExp(`Re-queued ${rest} dead letter`).test(flash2), { rest, flash: flash2 });

    // Associations and configuration.
    await page.click("nav >> text=Associations");
    await keep("08-associations");
    const assocs = await page.$$eval("tr.assoc", (rows) => rows.map((r) => r.textContent));
    report("the associations page lists the sender's", assocs.some((t) => t.includes(task.callingAE) && t.includes("released")), { rows: assocs.length });
    await page.click("nav >> text=Configuration");
    await keep("09-configuration");
    const conf = await page.textContent("main");
    report("the configuration page lists the destinations, no secret", conf.includes(task.up) && conf.includes(task.down) && !conf.includes("$2y$") && !conf.includes(task.password));

    // Actions are refused without the CSRF token, from another site, and
    // without a session.
    const form = { action: "purge", scope: "reason", destination: task.down, reason: "0000000000000000", confirm: "yes" };
    const noToken = await page.evaluate(async (f) => (await fetch("/dead/act", { method: "POST", body: new URLSearchParams(f) })).status, form);
    const csrf = await page.$eval("input[name=csrf]", (e) => e.value);
    const crossSite = await context.request.post(task.url + "/dead/act", { form: Object.assign({ csrf }, form), headers: { Origin: "http://evil.example" }, maxRedirects: 0 });
    const other = await browser.newContext();
    const noSession = await other.request.post(task.url + "/dead/act", { form: Object.assign({ csrf }, form), maxRedirects: 0 });
    await other.close();
    report("an action without the CSRF token, from another site or without a session is refused", noToken === 403 && crossSite.status() === 403 && noSession.status() === 403, {
      noToken,
      crossSite: crossSite.status(),
      noSession: noSession.status(),
    });

    // Without JavaScript: everything but the refreshing works (plain
    // forms and links).
    const noJS = await browser.newContext({ javaScriptEnabled: false });
    const p2 = await noJS.newPage();
    p2.on("request", (r) => visited.add(r.url()));
    await p2.goto(task.url + "/find?calling=" + encodeURIComponent(task.callingAE));
    await p2.fill("input[name=username]", task.user);
    await p2.fill("input[name=password]", task.password);
    await Promise.all([p2.waitForURL((u) => u.pathname === "/find"), p2.click("button[type=submit]")]);
    const rowsNoJS = await p2.$$eval("[data-sop].object", (r) => r.length);
    await p2.goto(task.url + "/dead");
    const deadNoJS = await p2.textContent("main");
    await p2.goto(task.url + "/");
    const destsNoJS = await p2.$$eval("tr.dest", (r) => r.length);
    report("the console works without JavaScript (login, Find, dead letters, overview)", rowsNoJS === task.total && /Dead letters/.test(deadNoJS) && destsNoJS >= 2, {
      rows: rowsNoJS,
      destinations: destsNoJS,
    });
    await noJS.close();

    // Logout ends the session.
    await Promise.all([page.waitForURL((u) => u.pathname === "/login"), page.click("header button[type=submit]")]);
    await page.goto(task.url + "/");
    report("logout ends the session", new URL(page.url()).pathname === "/login");
    await keep("10-logged-out");

    // No patient data on any page or in any URL.
    const leaks = [];
    for (const [name, html] of pagesSeen) {
      for (const f of task.forbidden) if (html.includes(f)) leaks.push({ page: name, value: f });
    }
    for (const u of visited) {
      const d = decodeURIComponent(u);
      for (const f of task.forbidden) if (d.includes(f)) leaks.push({ url: u, value: f });
    }
    report("no patient name or ID on any page or in any URL", leaks.length === 0, { pages: pagesSeen.length, urls: visited.size, forbidden: task.forbidden.length, leaks });
  } finally {
    await browser.close();
  }
}

main()
  .catch((e) => {
    report("the script ran", false, { error: String(e && e.stack ? e.stack : e) });
  })
  .finally(() => process.exit(failed ? 1 : 0));
