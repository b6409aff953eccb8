// A project: the prompt and script boxes, the live status of the version being worked on (from
// the event stream), the version history, and the selected version's preview, report,
// downloads, script, changes and log.

import { ApiError, fetchFile, get, p, post, watch } from "../api.js";
import { fill, h, notice } from "../dom.js";
import {
  diffLines,
  FINAL_STATES,
  GENERATION_FINAL_STATES,
  formatBytes,
  formatTime,
  lastLine,
  modelFormats,
  outputsSize,
  parentVersion,
  previewFormat,
  progressOf,
  provenance,
  stateLabel,
  steps,
} from "../logic.js";
import { Viewer, webglAvailable } from "../viewer.js";
import { navigate } from "../main.js";

const MAX_SCRIPT_BYTES = 1024 * 1024;

/** The gateway has no such route (404 "no route for ...") or its backend does not implement it
 *  (501): a server older than the app, not a problem of this project. */
function unserved(error) {
  return error.status === 501 || (error.status === 404 && String(error.message).startsWith("no route for"));
}

export function projectView(main, project, options) {
  const base = p(project);
  const state = {
    versions: [],
    statuses: new Map(),
    selected: 0,
    work: null,
    editFrom: 0,
    detailsTab: "script",
    gone: false,
    loadToken: 0,
    versionsAsked: 0,
    versionsShown: 0,
  };
  let viewer = null;
  let closeEvents = () => {};

  // --- the page ------------------------------------------------------------------------------

  const promptBox = h("textarea", { id: "prompt", rows: 4, maxlength: 4000, placeholder: "A 40 x 20 x 10 mm block with a 6 mm hole through the middle" });
  const scriptBox = h("textarea", { id: "script", rows: 12, spellcheck: "false", class: "code", placeholder: "# paste a FreeCAD script, or drop a .py file here" });
  const fileInput = h("input", { id: "script-file", type: "file", accept: ".py,text/x-python,text/plain", class: "visually-hidden", onchange: () => fileInput.files[0] && readFile(fileInput.files[0]) });
  const basedOn = h("p", { class: "muted small", id: "based-on" });
  const composeError = h("p", { class: "error-text", role: "alert", id: "compose-error" });
  const promptPanel = h(
    "form",
    { id: "panel-prompt", role: "tabpanel", "aria-labelledby": "tab-prompt", onsubmit: (e) => { e.preventDefault(); generate(); } },
    h("label", { for: "prompt" }, "Describe the part"),
    promptBox,
    h("div", { class: "row end" }, h("button", { type: "submit", id: "generate" }, "Generate")),
  );
  const scriptPanel = h(
    "form",
    { id: "panel-script", role: "tabpanel", "aria-labelledby": "tab-script", hidden: true, onsubmit: (e) => { e.preventDefault(); submitScript(); } },
    h("label", { for: "script" }, "FreeCAD script"),
    scriptBox,
    basedOn,
    h(
      "div",
      { class: "row between" },
      h("label", { for: "script-file", class: "button secondary", tabindex: 0, role: "button", onkeydown: (e) => (e.key === "Enter" || e.key === " ") && (e.preventDefault(), fileInput.click()) }, "Open a file…"),
      fileInput,
      h("button", { type: "submit", id: "submit-script" }, "Submit as new version"),
    ),
  );
  const tabPrompt = h("button", { type: "button", role: "tab", id: "tab-prompt", "aria-controls": "panel-prompt", "aria-selected": "true", onclick: () => composeTab("prompt") }, "Prompt");
  const tabScript = h("button", { type: "button", role: "tab", id: "tab-script", "aria-controls": "panel-script", "aria-selected": "false", onclick: () => composeTab("script") }, "Script");
  const compose = h(
    "section",
    { class: "card compose", "aria-label": "New version" },
    h("div", { class: "tabs", role: "tablist", "aria-label": "New version from" }, tabPrompt, tabScript),
    promptPanel,
    scriptPanel,
    composeError,
  );

  const stepList = h("ol", { class: "steps", id: "steps" });
  const progress = h("section", { class: "card progress", "aria-label": "Status", "aria-live": "polite" }, h("h2", {}, "Status"), stepList);

  const history = h("ol", { class: "versions", id: "versions" });
  const historyCard = h("section", { class: "card history", "aria-labelledby": "versions-title" }, h("h2", { id: "versions-title" }, "Versions"), history);

  const versionTitle = h("h2", { id: "version-title" }, "Preview");
  const versionActions = h("div", { class: "row" });
  const stage = h("div", { class: "stage", id: "stage" });
  const stageMessage = h("div", { class: "stage-message", id: "stage-message", role: "status" });
  const report = h("aside", { class: "report", id: "report", "aria-label": "Geometry report" });
  const downloads = h("div", { class: "downloads", id: "downloads", role: "group", "aria-label": "Downloads" });
  const errorBox = h("div", { id: "version-error" });
  const preview = h(
    "section",
    { class: "card preview", "aria-labelledby": "version-title" },
    h("div", { class: "row between" }, versionTitle, versionActions),
    errorBox,
    h("div", { class: "preview-body" }, h("div", { class: "stage-wrap" }, stage, stageMessage), report),
    downloads,
  );

  const detailTabs = ["script", "changes", "log"].map((tab) =>
    h("button", { type: "button", role: "tab", id: `tab-${tab}`, "aria-controls": "details-body", "aria-selected": String(tab === state.detailsTab), onclick: () => showDetails(tab) }, { script: "Source", changes: "Changes", log: "Log" }[tab]),
  );
  const detailsBody = h("div", { id: "details-body", role: "tabpanel", class: "details-body", tabindex: 0 });
  const details = h("section", { class: "card details", "aria-label": "Version details" }, h("div", { class: "tabs", role: "tablist" }, detailTabs), detailsBody);

  const title = h("h1", {}, project);
  fill(
    main,
    h(
      "div",
      { class: "page project-page" },
      h("div", { class: "page-head" }, h("div", {}, h("a", { href: "/", "data-link": true, class: "muted small" }, "← Projects"), title)),
      h("div", { class: "layout" }, h("div", { class: "side" }, compose, progress, historyCard), h("div", { class: "content" }, preview, details)),
    ),
  );

  for (const target of [scriptBox, compose]) {
    target.addEventListener("dragover", (e) => {
      e.preventDefault();
      compose.classList.add("dropping");
    });
    target.addEventListener("dragleave", () => compose.classList.remove("dropping"));
    target.addEventListener("drop", (e) => {
      e.preventDefault();
      compose.classList.remove("dropping");
      const file = e.dataTransfer.files[0];
      if (file) readFile(file);
    });
  }

  // --- loading ---------------------------------------------------------------------------------

  async function start() {
    try {
      // a project named on the projects page has no versions until its first upload
      if (!options.created) await loadVersions();
    } catch (error) {
      // a new project (named on the projects page) exists from its first version on
      if (error.status === 404 && !options.created) return notFound(error.message);
      if (error.status === 404) state.versions = [];
      else {
        if (error.status !== 401) fill(history, h("li", { class: "error-text" }, `Could not list versions: ${error.message}`));
        return;
      }
    }
    renderHistory();
    if (state.gone) return;
    if (state.versions.length) openEvents();
    const latest = state.versions.length ? state.versions[state.versions.length - 1].version : 0;
    const latestStatus = state.statuses.get(latest);
    if (latestStatus && !FINAL_STATES.has(latestStatus.state)) {
      // a version still under way when the page opened: follow it
      state.work = { kind: "upload", uploading: false, version: latest, generation: null, status: latestStatus, failure: null };
    }
    renderSteps();
    // the rows are clickable as soon as the list has loaded, before the statuses: a version
    // picked meanwhile stays picked (the latest is only the default)
    if (state.selected) return;
    if (state.versions.length) select(state.versions[state.versions.length - 1].version);
    else {
      fill(stageMessage, "No versions yet: type a prompt or drop a script.");
      fill(versionTitle, "Preview");
      if (options.created) promptBox.focus();
    }
  }

  function notFound(message) {
    fill(
      main,
      h(
        "div",
        { class: "page" },
        h("div", { class: "card empty" }, h("h1", {}, "Project not found"), h("p", {}, `${message}.`),
          h("p", { class: "muted" }, "It does not exist, or it is not yours. A project is created by its first version:"),
          h("div", { class: "row" }, h("a", { href: "/", "data-link": true, class: "button secondary" }, "Your projects"),
            h("button", { type: "button", onclick: () => navigate(location.pathname, { created: true }) }, `Create “${project}”`))),
      ),
    );
  }

  async function loadVersions() {
    // each event of an unknown version reloads the list, and the replies may cross: a list asked
    // for before the one shown is older, and dropped (it would hide the newest versions)
    const asked = ++state.versionsAsked;
    const all = [];
    let token = "";
    do {
      const page = await get(`${base}/scripts?page_size=1000${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
      all.push(...page.scripts);
      token = page.next_page_token;
    } while (token);
    if (asked < state.versionsShown) return;
    state.versionsShown = asked;
    state.versions = all;
    renderHistory();
    // statuses of the newest versions (older ones on selection)
    await Promise.all(all.slice(-30).filter((v) => !state.statuses.has(v.version)).map((v) => loadStatus(v.version)));
  }

  async function loadStatus(version) {
    try {
      const status = await get(`${base}/status?version=${version}`);
      setStatus(status);
      return status;
    } catch (error) {
      return null;
    }
  }

  function setStatus(status) {
    const known = state.statuses.get(status.version);
    // never step back from a final state (a late event, or a GET answered before it)
    if (known && FINAL_STATES.has(known.state) && !FINAL_STATES.has(status.state)) return;
    state.statuses.set(status.version, status);
    renderHistory();
  }

  // --- the event stream ------------------------------------------------------------------------

  let watching = false;
  function openEvents() {
    // a project exists from its first version on: its stream is opened then
    if (watching || state.gone) return;
    watching = true;
    closeEvents = watch(project, onStatus, onTrouble);
  }

  function onStatus(status) {
    if (state.gone) return;
    if (status.generation && status.generation.id) return onGeneration(status.generation);
    if (!status.version) return;
    const wasSelected = state.selected === status.version;
    const before = state.statuses.get(status.version);
    setStatus(status);
    if (!state.versions.some((v) => v.version === status.version)) loadVersions().catch(() => {});
    if (state.work && state.work.version === status.version) {
      state.work.status = state.statuses.get(status.version);
      renderSteps();
    }
    const changed = !before || before.state !== status.state;
    if (wasSelected && changed) showVersion(status.version);
  }

  function onGeneration(progressUpdate) {
    const work = state.work;
    if (!work || work.kind !== "generate" || work.generationId !== progressUpdate.id) return;
    // an update from the stream and one asked for may cross: an ended generation stays ended
    if (work.generation && GENERATION_FINAL_STATES.has(work.generation.state)) return;
    work.generation = progressUpdate;
    if (progressUpdate.version && progressUpdate.version !== work.version) {
      work.version = progressUpdate.version;
      work.uploading = false;
      work.status = state.statuses.get(work.version) || null;
      loadVersions().then(() => select(work.version)).catch(() => {});
    }
    if (progressUpdate.state === "failed" && !work.version) work.failure = progressUpdate.message || "the generation failed";
    renderSteps();
  }

  async function onTrouble(message) {
    if (message) {
      notice(`Live updates stopped: ${message}`, "error");
      return;
    }
    // EventSource hides the status: ask the API whether the token still holds (a 401 signs out)
    try {
      await get(`${base}/status`);
    } catch {
      // the 401 handler took over, or the gateway is away: EventSource retries by itself
    }
  }

  // --- new versions ----------------------------------------------------------------------------

  function composeTab(tab) {
    const prompt = tab === "prompt";
    tabPrompt.setAttribute("aria-selected", String(prompt));
    tabScript.setAttribute("aria-selected", String(!prompt));
    promptPanel.hidden = !prompt;
    scriptPanel.hidden = prompt;
    (prompt ? promptBox : scriptBox).focus();
  }

  function readFile(file) {
    if (file.size > MAX_SCRIPT_BYTES) {
      fill(composeError, `${file.name} is larger than 1 MiB.`);
      return;
    }
    file.text().then((text) => {
      scriptBox.value = text;
      state.editFrom = 0;
      fill(basedOn, `From ${file.name}`);
      composeTab("script");
    });
  }

  async function submitScript() {
    const script = scriptBox.value;
    if (!script.trim()) {
      fill(composeError, "The script is empty.");
      return;
    }
    fill(composeError);
    const metadata = state.editFrom ? { source: "edited", parent_version: String(state.editFrom) } : { source: "upload" };
    state.work = { kind: "upload", uploading: true, version: 0, generation: null, status: null, failure: null };
    renderSteps();
    busy(true);
    try {
      const reply = await post(`${base}/upload-script`, { script, metadata }, { "Idempotency-Key": crypto.randomUUID() });
      const version = reply.script.version;
      openEvents();
      state.work.version = version;
      state.work.uploading = false;
      state.work.status = state.statuses.get(version) || null;
      if (!state.versions.some((v) => v.version === version)) {
        // a list asked for before the upload lacks this version: it is dropped as older than
        // this one, and a list asked for now brings any other version it would have shown
        state.versions.push(reply.script);
        state.versions.sort((a, b) => a.version - b.version);
        state.versionsShown = ++state.versionsAsked;
        loadVersions().catch(() => {});
      }
      state.editFrom = 0;
      fill(basedOn);
      renderSteps();
      // its events may have come before this answer: they are in state.statuses; the stream
      // (open before the upload, or opened just now with the current status first) brings the
      // rest
      select(version);
    } catch (error) {
      state.work.uploading = false;
      state.work.failure = error.message;
      renderSteps();
      if (error.status !== 401) fill(composeError, error.message);
    } finally {
      busy(false);
    }
  }

  async function generate() {
    const prompt = promptBox.value.trim();
    if (!prompt) {
      fill(composeError, "Describe the part first.");
      return;
    }
    fill(composeError);
    state.work = { kind: "generate", uploading: true, version: 0, generation: null, status: null, failure: null, generationId: "" };
    renderSteps();
    busy(true);
    try {
      const body = { prompt };
      if (state.editFrom) body.parent_version = state.editFrom;
      const generation = await post(`${base}/generate`, body, { "Idempotency-Key": crypto.randomUUID() });
      openEvents();
      state.work.uploading = false; // the generator uploads each round's script itself
      state.work.generationId = generation.id;
      state.work.generation = progressOf(generation);
      renderSteps();
      followGeneration(generation.id);
    } catch (error) {
      state.work.uploading = false;
      state.work.failure = unserved(error) ? `Text to CAD is not available on this server (${error.message}).` : error.message;
      renderSteps();
    } finally {
      busy(false);
    }
  }

  // The event stream of a project without a version yet answers 404 (the watcher knows a
  // project from its first version on), and a stream may miss an update: until the generation
  // ends, its state and its version's status are also asked for.
  async function followGeneration(id) {
    const following = () => !state.gone && state.work && state.work.generationId === id;
    while (following()) {
      try {
        const progress = progressOf(await get(`${base}/generations/${encodeURIComponent(id)}`));
        onGeneration(progress);
        const version = progress.version;
        const known = state.statuses.get(version);
        if (version && !(known && FINAL_STATES.has(known.state)) && (await loadStatus(version))) {
          if (following() && state.work.version === version) {
            state.work.status = state.statuses.get(version);
            renderSteps();
          }
        }
        if (GENERATION_FINAL_STATES.has(progress.state)) return;
      } catch (error) {
        if (error.status === 401) return; // the sign-in page took over
      }
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }

  function busy(on) {
    for (const button of main.querySelectorAll("#generate, #submit-script")) button.disabled = on;
  }

  function renderSteps() {
    const work = state.work;
    if (!work) {
      fill(stepList, h("li", { class: "muted" }, "Nothing under way."));
      return;
    }
    const items = steps(work).map((step) =>
      h(
        "li",
        { class: `step ${step.state}`, dataset: { state: step.state } },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "step-label" }, step.label, step.state === "done" ? h("span", { class: "visually-hidden" }, " (done)") : null),
        step.detail ? h("code", { class: "step-detail" }, step.detail) : null,
        step.state === "error" && work.version && work.status ? h("button", { type: "button", class: "link small", onclick: () => { select(work.version); showDetails("log"); } }, "Open the log") : null,
      ),
    );
    const head = work.version ? h("li", { class: "muted small step-head" }, `Version ${work.version}`) : null;
    fill(stepList, head, items);
  }

  // --- history and the selected version --------------------------------------------------------

  function renderHistory() {
    if (!state.versions.length) {
      fill(history, h("li", { class: "muted" }, "No versions yet."));
      return;
    }
    const rows = [...state.versions].reverse().map((v) => {
      const status = state.statuses.get(v.version);
      const label = status ? stateLabel(status.state) : "…";
      const size = status && status.state === "completed" ? formatBytes(outputsSize(status)) : "";
      return h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "version",
            "aria-current": v.version === state.selected ? "true" : undefined,
            dataset: { version: v.version },
            onclick: () => select(v.version),
          },
          h("span", { class: "version-number" }, `v${v.version}`),
          h("span", { class: `badge ${status ? status.state : ""}` }, label),
          h("span", { class: "version-meta" }, h("time", { datetime: v.uploaded_at }, formatTime(v.uploaded_at)), size ? ` · ${size}` : "", ` · ${provenance(v.metadata)}`),
        ),
      );
    });
    fill(history, rows);
  }

  function select(version) {
    state.selected = version;
    renderHistory();
    showVersion(version);
  }

  async function showVersion(version) {
    const token = ++state.loadToken;
    const current = () => token === state.loadToken && !state.gone;
    let status = state.statuses.get(version);
    // the version just submitted is told by the stream (the watcher may not know it yet)
    const submitted = state.work && state.work.version === version;
    if (!status && !submitted) status = await loadStatus(version);
    if (!current()) return;
    const s = status ? status.state : "processing";
    fill(versionTitle, `Version ${version}`, " ", h("span", { class: `badge ${s}` }, stateLabel(s)));
    fill(
      versionActions,
      h("button", { type: "button", class: "secondary small", id: "edit-version", onclick: () => editVersion(version) }, `Edit v${version}`),
      viewer ? h("button", { type: "button", class: "secondary small", id: "fit", onclick: () => viewer.fit() }, "Fit") : null,
    );
    fill(errorBox);
    fill(downloads);
    fill(report);
    showDetails(state.detailsTab);
    if (s === "completed") {
      showDownloads(version, status);
      showReport(version);
      await showModel(version, status, current);
      return;
    }
    clearModel();
    if (s === "error" || s === "timeout") {
      fill(stageMessage, s === "error" ? "FreeCAD could not run this version." : "This version timed out.");
      fill(
        errorBox,
        h(
          "div",
          { class: "error-box", role: "alert" },
          h("strong", {}, s === "error" ? "Error: " : "Timed out: "),
          h("code", { id: "error-line" }, lastLine(status.error) || "no error message"),
          " ",
          h("button", { type: "button", class: "link", id: "open-log", onclick: () => showDetails("log") }, "Open the log"),
        ),
      );
    } else if (s === "queued") {
      fill(stageMessage, h("span", { class: "spinner", "aria-hidden": "true" }), ` Version ${version} is waiting for a worker…`);
    } else {
      fill(stageMessage, h("span", { class: "spinner", "aria-hidden": "true" }), ` FreeCAD is processing version ${version}…`);
    }
  }

  function clearModel() {
    if (viewer) viewer.clear();
  }

  async function showModel(version, status, current) {
    const formats = modelFormats(status);
    const format = previewFormat(formats);
    if (!format) {
      clearModel();
      fill(stageMessage, "This version has no STL or OBJ to preview.");
      return;
    }
    if (!webglAvailable()) {
      fill(stageMessage, "This browser cannot draw 3D (WebGL is off).");
      return;
    }
    if (!viewer) {
      viewer = new Viewer(stage);
      versionActions.append(h("button", { type: "button", class: "secondary small", id: "fit", onclick: () => viewer.fit() }, "Fit"));
    }
    const bar = h("progress", { max: 100, value: 0, "aria-label": "Loading the model" });
    const label = h("span", {}, `Loading ${format.toUpperCase()}…`);
    fill(stageMessage, h("div", { class: "loading" }, label, bar));
    try {
      const buffer = await fetchFile(project, format, version, (loaded, total) => {
        if (!current()) return;
        if (total) bar.value = Math.round((loaded / total) * 100);
        fill(label, `Loading ${format.toUpperCase()}… ${formatBytes(loaded)}${total ? ` of ${formatBytes(total)}` : ""}`);
      });
      if (!current()) return;
      viewer.show(buffer, format);
      fill(stageMessage);
      stage.dataset.loaded = `v${version}.${format}`;
    } catch (error) {
      if (current()) fill(stageMessage, `Could not load the model: ${error.message}`);
    }
  }

  function showDownloads(version, status) {
    const formats = modelFormats(status);
    const buttons = formats.map((format) => {
      const file = (status.outputs || []).find((o) => o.format === format);
      return h(
        "button",
        { type: "button", class: "secondary download", dataset: { format }, onclick: (e) => download(e.currentTarget, version, format, file) },
        format.toUpperCase(),
        file ? h("span", { class: "muted small" }, ` ${formatBytes(file.size_bytes)}`) : null,
      );
    });
    fill(downloads, h("span", { class: "muted small" }, "Download"), buttons);
  }

  async function download(button, version, format, file) {
    button.disabled = true;
    try {
      const buffer = await fetchFile(project, format, version);
      const url = URL.createObjectURL(new Blob([buffer], { type: "application/octet-stream" }));
      const name = file ? file.name : `${project}_v${version}.${format}`;
      const link = h("a", { href: url, download: `${project}_v${version}_${name}` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      notice(`Download failed: ${error.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  async function showReport(version) {
    fill(report, h("h3", {}, "Geometry"), h("p", { class: "muted small" }, "Loading…"));
    let data;
    try {
      data = await get(`${base}/report?version=${version}`);
    } catch (error) {
      if (state.selected !== version) return;
      const text = unserved(error)
          ? "This server does not serve geometry reports yet."
          : error.status === 404
            ? "No geometry report for this version."
            : `No geometry report: ${error.message}`;
      fill(report, h("h3", {}, "Geometry"), h("p", { class: "muted small", id: "report-missing" }, text));
      return;
    }
    if (state.selected !== version) return;
    const total = data.total;
    if (!total) {
      fill(report, h("h3", {}, "Geometry"), h("p", { class: "muted small" }, "No solids in this version."));
      return;
    }
    const num = (x, unit) => `${Number(x).toLocaleString(undefined, { maximumFractionDigits: 2 })} ${unit}`;
    const rows = [
      ["Bounding box", `${num(total.x_mm, "")}× ${num(total.y_mm, "")}× ${num(total.z_mm, "mm")}`],
      ["Volume", num(total.volume_mm3, "mm³")],
      ["Area", num(total.area_mm2, "mm²")],
      ["Faces", String(total.faces)],
      ["Solids", String(data.solids)],
      ["Valid", total.valid ? "yes" : "no"],
    ];
    fill(
      report,
      h("h3", {}, "Geometry"),
      h("dl", { id: "report-table" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { class: k === "Valid" && !total.valid ? "error-text" : "" }, v)])),
      data.freecad_version ? h("p", { class: "muted small" }, `FreeCAD ${data.freecad_version}`) : null,
    );
  }

  async function editVersion(version) {
    try {
      const script = await get(`${base}/script/${version}`);
      scriptBox.value = script.content;
      state.editFrom = version;
      fill(basedOn, `Editing v${version}: submitting makes the next version.`);
      composeTab("script");
      scriptBox.focus();
    } catch (error) {
      if (error.status !== 401) fill(composeError, `Could not open v${version}: ${error.message}`);
    }
  }

  async function showDetails(tab) {
    state.detailsTab = tab;
    for (const button of detailTabs) button.setAttribute("aria-selected", String(button.id === `tab-${tab}`));
    const version = state.selected;
    if (!version) {
      fill(detailsBody, h("p", { class: "muted" }, "Select a version."));
      return;
    }
    fill(detailsBody, h("p", { class: "muted" }, "Loading…"));
    const stale = () => state.selected !== version || state.detailsTab !== tab || state.gone;
    try {
      if (tab === "script") {
        const script = await get(`${base}/script/${version}`);
        if (stale()) return;
        fill(detailsBody, h("pre", { class: "code", id: "script-view" }, script.content));
      } else if (tab === "changes") {
        const record = state.versions.find((v) => v.version === version);
        const parent = (record && parentVersion(record.metadata)) || version - 1;
        if (parent < 1) {
          fill(detailsBody, h("p", { class: "muted" }, "The first version: nothing to compare with."));
          return;
        }
        const [before, after] = await Promise.all([get(`${base}/script/${parent}`), get(`${base}/script/${version}`)]);
        if (stale()) return;
        const lines = diffLines(before.content, after.content);
        const changed = lines.filter((l) => l.op !== " ").length;
        fill(
          detailsBody,
          h("p", { class: "muted small" }, `v${parent} → v${version}: ${changed ? `${changed} lines changed` : "no changes"}`),
          h("pre", { class: "code diff", id: "diff-view" }, lines.map((l) => h("span", { class: l.op === "+" ? "add" : l.op === "-" ? "del" : "same" }, `${l.op} ${l.text}\n`))),
        );
      } else {
        const listing = await get(`${base}/logs?version=${version}`);
        if (stale()) return;
        if (!listing.logs.length) {
          fill(detailsBody, h("p", { class: "muted" }, "No log yet."));
          return;
        }
        const log = listing.logs[listing.logs.length - 1];
        const content = await get(`${base}/logs/${encodeURIComponent(log.name)}`);
        if (stale()) return;
        fill(
          detailsBody,
          h("p", { class: "muted small" }, `${log.name} · ${formatTime(log.written_at)} · ${formatBytes(log.size_bytes)}`),
          h("pre", { class: `code log ${log.level}`, id: "log-view" }, content.content),
        );
      }
    } catch (error) {
      if (!stale() && error.status !== 401) fill(detailsBody, h("p", { class: "error-text" }, error.message));
    }
  }

  start();
  return () => {
    state.gone = true;
    closeEvents();
    if (viewer) viewer.dispose();
  };
}

export { ApiError };
