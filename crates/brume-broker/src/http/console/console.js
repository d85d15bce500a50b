// brume console: live updates over server-sent events, and the publish
// form's upload. No framework, no build step; served from the binary.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}

// The overview: the broker's status, every second.
function liveOverview() {
  const source = new EventSource("/console/live");
  source.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    setText("providers", String(s.providers_connected));
    setText("slots", s.capacity.slots_free + " of " + s.capacity.slots_total + " free");
    setText("waiting", String(s.queues.waiting));
    setText("in-flight", String(s.queues.in_flight));
    setText("jobs-open", String(s.queues.jobs_open));
    setText("uptime", s.uptime_s + " s");
  });
}

// A job's page: its events as they happen, then its result.
function liveJob(id) {
  const bar = document.getElementById("progress");
  const log = document.getElementById("events");
  const source = new EventSource("/console/jobs/" + id + "/events");
  const seen = {};
  const onEvent = (e) => {
    const ev = JSON.parse(e.data);
    if (seen[ev.seq]) return;
    seen[ev.seq] = true;
    setText("state", ev.kind === "progress" || ev.kind === "assigned" ? "running" : ev.kind);
    const item = document.createElement("li");
    let line = ev.kind;
    if (ev.provider) line += " on " + ev.provider;
    if (ev.fuel) line += " (" + ev.fuel + " fuel)";
    if (ev.message) line += ": " + ev.message;
    item.textContent = line;
    log.appendChild(item);
    if (ev.stderr) {
      const err = document.getElementById("stderr");
      err.textContent += ev.stderr;
    }
    if (ev.kind === "progress" && ev.fuel && bar) {
      const max = Number(bar.dataset.fuel || "0");
      if (max > 0) {
        const pct = Math.min(99, Math.round((100 * ev.fuel) / max));
        bar.value = pct;
        bar.setAttribute("aria-valuenow", String(pct));
        setText("progress-label", pct + "%");
      }
    }
    if (ev.kind === "succeeded" || ev.kind === "failed" || ev.kind === "cancelled") {
      source.close();
      if (bar) {
        bar.value = 100;
        bar.setAttribute("aria-valuenow", "100");
        setText("progress-label", "100%");
      }
      fetch("/console/jobs/" + id + "/result")
        .then((r) => r.json())
        .then((r) => {
          if (r.stdout !== undefined) {
            setText("stdout", typeof r.stdout === "string" ? r.stdout : "(binary, base64) " + r.stdout.base64);
            setText("exit-code", String(r.exit_code));
          }
          setText("state", ev.kind);
          document.body.dataset.jobDone = ev.kind;
        });
    }
  };
  // Each event is named by its kind.
  for (const kind of ["queued", "assigned", "running", "progress", "retry", "succeeded", "failed", "cancelled"]) {
    source.addEventListener(kind, onEvent);
  }
}

// Publishing: the module's bytes go up as the body of one request. On
// success the page reloads to list the new version, and the message
// survives the reload (in sessionStorage), so it is never lost to it.
function publishForm() {
  const form = document.getElementById("publish");
  if (!form) return;
  const kept = sessionStorage.getItem("publish-result");
  if (kept) {
    document.getElementById("publish-result").textContent = kept;
    sessionStorage.removeItem("publish-result");
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = document.getElementById("module").files[0];
    const name = document.getElementById("name").value;
    const kind = document.getElementById("kind").value;
    const out = document.getElementById("publish-result");
    if (!file) {
      out.textContent = "Choose a .wasm file first.";
      return;
    }
    out.textContent = "Publishing…";
    fetch("/console/services?name=" + encodeURIComponent(name) + "&kind=" + kind, {
      method: "POST",
      headers: { "x-csrf-token": csrf(), "content-type": "application/octet-stream" },
      body: file,
    })
      .then((r) => r.json().then((v) => [r.status, v]))
      .then(([status, v]) => {
        if (status === 201) {
          out.textContent = "Published " + v.owner + "~" + v.name + "@" + v.version + " (sha256 " + v.digest + ")";
          sessionStorage.setItem("publish-result", out.textContent);
          setTimeout(() => window.location.reload(), 300);
        } else {
          out.textContent = "Refused (" + v.code + "): " + v.message;
        }
      });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "overview") liveOverview();
  if (page === "job") liveJob(document.body.dataset.job);
  if (page === "services") publishForm();
});
