// The Flask-Offload dashboard: polls the job list (GET <prefix>/jobs) and
// updates the rows the server rendered in place, adds rows for new jobs
// and removes rows that left the page. Cancel buttons post with the page's
// CSRF token in a header. No dependencies, no build step.
(function () {
  "use strict";

  const root = document.getElementById("offload-dashboard");
  if (!root) return;
  const tbody = document.getElementById("offload-jobs");
  const rowTemplate = document.getElementById("offload-row-template");
  const live = document.getElementById("offload-live");
  const empty = document.getElementById("offload-empty");
  const csrfMeta = document.querySelector('meta[name="offload-csrf-token"]');
  const csrfHeader = root.dataset.csrfHeader;

  // Poll quickly while a job on the page is unfinished, slowly otherwise.
  const FAST = 500;
  const SLOW = 3000;
  let timer = null;
  let inFlight = false;

  function listUrl() {
    const params = new URLSearchParams();
    if (root.dataset.stateFilter) params.set("state", root.dataset.stateFilter);
    params.set("page", root.dataset.page);
    params.set("per_page", root.dataset.perPage);
    return root.dataset.listUrl + "?" + params.toString();
  }

  // -- formatting, the same as the server's (dashboard/__init__.py) ------

  function barValue(job) {
    if (job.state === "SUCCEEDED") return 1;
    if (job.progress !== null) return job.progress;
    if (job.state === "RUNNING") return null;
    return 0;
  }

  function percent(job) {
    let value = job.progress;
    if (job.state === "SUCCEEDED") value = 1;
    // Whole percents, never rounded up to 100 before the end; the epsilon
    // keeps 0.57 * 100 (56.99999999999999) at 57.
    return value === null ? "" : Math.floor(value * 100 + 1e-9) + "%";
  }

  function duration(job) {
    let seconds = job.duration;
    if (seconds === null) return "";
    if (seconds < 10) return seconds.toFixed(2) + " s";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    let minutes = Math.floor(seconds / 60);
    seconds = Math.floor(seconds) % 60;
    if (minutes < 60) return minutes + " min " + String(seconds).padStart(2, "0") + " s";
    const hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    return hours + " h " + String(minutes).padStart(2, "0") + " min";
  }

  function isUrlKey(key) {
    return key === "url" || key.endsWith("_url");
  }

  function scalar(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function resultSummary(job) {
    if (!("result" in job)) return "";
    const result = job.result;
    if (Array.isArray(result)) return result.length + (result.length === 1 ? " item" : " items");
    if (result !== null && typeof result === "object") {
      return Object.entries(result)
        .filter(([key, value]) => !isUrlKey(key)
          && (value === null || ["string", "number", "boolean"].includes(typeof value)))
        .slice(0, 6)
        .map(([key, value]) => key + ": " + scalar(value))
        .join(" · ");
    }
    return scalar(result);
  }

  // -- rows --------------------------------------------------------------

  function field(row, name) {
    return row.querySelector('[data-field="' + name + '"]');
  }

  function newRow(job) {
    const row = rowTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.jobId = job.id;
    field(row, "url").href = job.url;
    field(row, "name").textContent = job.name;
    field(row, "id").textContent = job.id;
    field(row, "progress").setAttribute("aria-label", "Progress of job " + job.id);
    const submitted = field(row, "submitted");
    submitted.dateTime = job.submitted_at;
    submitted.textContent = job.submitted_at.slice(11, 19);
    const form = field(row, "cancel");
    if (form) form.action = job.cancel_url;
    return row;
  }

  function updateRow(row, job) {
    if (row.dataset.state !== job.state) row.dataset.state = job.state;
    setText(field(row, "state"), job.state);
    const bar = field(row, "progress");
    const value = barValue(job);
    if (value === null) bar.removeAttribute("value");
    else if (bar.getAttribute("value") !== String(value)) bar.value = value;
    setText(field(row, "percent"), percent(job));
    setText(field(row, "message"), job.message || "");
    const args = field(row, "args");
    if (args && "args" in job) {
      setText(args, JSON.stringify(job.args));
      args.hidden = false;
    }
    const error = field(row, "error");
    setText(error, job.error ? job.error.type + ": " + job.error.message : "");
    error.hidden = !job.error;
    setText(field(row, "duration"), duration(job));

    const result = field(row, "result");
    if ("result" in job && result.hidden) {
      for (const link of job.result_links || []) {
        const a = document.createElement("a");
        a.dataset.role = "result-link";
        a.href = link.url;
        a.textContent = link.label;
        result.insertBefore(a, field(result, "summary"));
      }
      setText(field(result, "summary"), resultSummary(job));
      result.hidden = false;
    }

    const form = field(row, "cancel");
    if (form && !job.cancellable) {
      form.remove();
    } else if (form) {
      form.querySelector('input[type="hidden"]').value = csrfMeta.content;
      const button = form.querySelector('[data-action="cancel"]');
      if (job.cancel_requested && !button.disabled) {
        button.disabled = true;
        button.textContent = "Cancelling";
      }
    }
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function render(data) {
    csrfMeta.content = data.csrf_token;
    const existing = new Map();
    for (const row of tbody.querySelectorAll("tr[data-job-id]")) {
      existing.set(row.dataset.jobId, row);
    }
    let previous = null;
    for (const job of data.jobs) {
      let row = existing.get(job.id);
      existing.delete(job.id);
      if (!row) row = newRow(job);
      updateRow(row, job);
      const wanted = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (wanted !== row) tbody.insertBefore(row, wanted);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
    empty.hidden = data.jobs.length > 0;

    let all = 0;
    for (const [state, count] of Object.entries(data.counts)) {
      all += count;
      const badge = root.querySelector('[data-count="' + state + '"]');
      if (badge) setText(badge, String(count));
    }
    setText(root.querySelector('[data-count="ALL"]'), String(all));
    setText(document.getElementById("offload-page"), "Page " + data.page + " of " + data.pages);
    document.getElementById("offload-prev").hidden = !data.prev;
    document.getElementById("offload-next").hidden = !data.next;
    return data.jobs.some((job) => job.cancellable);
  }

  // Only the summary is in the aria-live region: the clock, which changes at
  // every poll, is not, so screen readers announce changes, not each poll.
  const liveText = document.getElementById("offload-live-text") || live;
  const liveTime = document.getElementById("offload-live-time");

  function showLive(state, text, time) {
    live.dataset.live = state;
    setText(liveText, text);
    if (liveTime) setText(liveTime, time ? ", " + time : "");
  }

  // -- polling -------------------------------------------------------------

  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(poll, delay);
  }

  async function poll() {
    if (inFlight) return;
    if (document.hidden) return; // resumed by visibilitychange
    inFlight = true;
    let delay = SLOW;
    try {
      const response = await fetch(listUrl(), {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
      });
      const type = response.headers.get("Content-Type") || "";
      if (response.redirected || !type.startsWith("application/json")) {
        // A login page, a proxy's error page: not this blueprint's JSON.
        showLive("error", "The server answered " + response.status + " without the job list"
          + " (signed out?); reload the page.");
      } else if (!response.ok) {
        const data = await response.json();
        showLive("error", data.message || response.statusText);
      } else {
        const data = await response.json();
        const busy = render(data);
        delay = busy ? FAST : SLOW;
        const time = new Date().toLocaleTimeString();
        showLive("on", data.total + (data.total === 1 ? " job" : " jobs"), "updated " + time);
      }
    } catch (error) {
      showLive("error", "Cannot reach the server; retrying.");
    } finally {
      inFlight = false;
    }
    schedule(delay);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedule(0);
  });

  // -- cancelling ----------------------------------------------------------

  tbody.addEventListener("submit", async (event) => {
    const form = event.target.closest('form[data-field="cancel"]');
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector('[data-action="cancel"]');
    // The button is disabled now and removed once the job ends: keep the
    // keyboard user's place on the row (its state), not the page's top.
    const state = field(form.closest("tr"), "state");
    state.tabIndex = -1;
    button.disabled = true;
    button.textContent = "Cancelling";
    state.focus();
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: { Accept: "application/json", [csrfHeader]: csrfMeta.content },
        credentials: "same-origin",
      });
      if (!response.ok && response.status !== 409) {
        const data = await response.json().catch(() => ({}));
        showLive("error", data.message || response.statusText);
        button.disabled = false;
        button.textContent = "Cancel";
        button.focus();
      }
    } catch (error) {
      showLive("error", "Cannot reach the server; the job was not cancelled.");
      button.disabled = false;
      button.textContent = "Cancel";
      button.focus();
    }
    schedule(0);
  });

  schedule(0);
})();
