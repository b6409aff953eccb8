// The app's own logic, without the DOM: what the status sequence shows, where a version came
// from, sizes, times, the last line of an error, a line diff. Unit-tested in the browser
// (tests/webapp/test_webapp_logic.py).

export const FORMATS = ["stl", "obj", "step", "iges", "fcstd"];
export const PREVIEW_FORMATS = ["stl", "obj"];
export const FINAL_STATES = new Set(["completed", "error", "timeout"]);
export const GENERATION_FINAL_STATES = new Set(["succeeded", "failed"]);

/** A Generation (GET .../generations/{id}) as the progress the event stream carries
 *  (ProjectStatus.generation): the version of its latest round, or the one that succeeded, and
 *  the reason it failed, or its latest round's feedback. */
export function progressOf(generation) {
  const rounds = generation.rounds || [];
  const last = rounds.length ? rounds[rounds.length - 1] : null;
  return {
    id: generation.id,
    state: generation.state,
    round: generation.round || 0,
    max_rounds: generation.max_rounds || 0,
    version: generation.result_version || (last && last.version) || 0,
    message: generation.error || (last && last.feedback) || "",
  };
}

/** The step list of the version being worked on. A step under way says so with "…"
 *  ("Uploading…"); once done it says what it did ("Uploaded"); a step that failed, that it failed.
 *  work: {kind: "upload"|"generate", uploading: bool, version: N, generation: progress|null,
 *         status: ProjectStatus of the version|null, failure: string|null}
 *  Returns [{label, state: "done"|"active"|"error"|"pending", detail?}]. */
export function steps(work) {
  const out = [];
  const gen = work.generation;
  if (work.kind === "generate") {
    const generating = !gen || gen.state === "queued" || gen.state === "generating";
    // a generation that failed before it made a script: its step is "Generation failed" below
    if (!work.failure) {
      out.push({ label: generating ? "Generating script…" : "Script generated", state: generating ? "active" : "done" });
    }
    for (const round of repairRounds(gen)) {
      const of = `round ${round.round}${round.max ? ` of ${round.max}` : ""}`;
      out.push({
        label: round.current ? `Repairing, ${of}…` : `Repaired, ${of}`,
        state: round.current ? "active" : "done",
        detail: round.message || "",
      });
    }
  }
  const status = work.status;
  const state = status ? status.state : "";
  const uploaded = work.version > 0 && !work.uploading;
  if (work.failure && !uploaded) {
    if (work.kind === "upload") out.push({ label: "Upload failed", state: "error", detail: work.failure });
    else out.push({ label: "Generation failed", state: "error", detail: work.failure });
    return out;
  }
  out.push({
    label: uploaded ? "Uploaded" : "Uploading…",
    state: uploaded ? "done" : work.uploading || work.kind === "upload" ? "active" : "pending",
  });
  if (state === "error") {
    out.push({ label: "Ran in FreeCAD", state: "done" });
    out.push({ label: "Error", state: "error", detail: lastLine(status.error) });
  } else if (state === "timeout") {
    out.push({ label: "Ran in FreeCAD", state: "done" });
    out.push({ label: "Timed out", state: "error", detail: status.error || "" });
  } else if (state === "completed") {
    out.push({ label: "Ran in FreeCAD", state: "done" });
    if (gen && gen.state === "verifying") {
      out.push({ label: "Checking the geometry…", state: "active" });
    } else if (!gen || gen.state !== "failed") {
      out.push({ label: "Model ready", state: "done" });
    }
  } else if (state === "queued") {
    // uploaded; no worker has started it yet (others' jobs run first)
    out.push({ label: "Waiting for a worker…", state: "active" });
    out.push({ label: "Model ready", state: "pending" });
  } else {
    out.push({ label: "FreeCAD processing…", state: uploaded ? "active" : "pending" });
    out.push({ label: "Model ready", state: "pending" });
  }
  if (gen && gen.state === "failed") {
    out.push({ label: "Generation failed", state: "error", detail: gen.message || "" });
  }
  return out;
}

function repairRounds(gen) {
  if (!gen || !gen.round || gen.round < 2) return [];
  const rounds = [];
  for (let r = 2; r <= gen.round; r++) {
    const current = r === gen.round && gen.state === "repairing";
    rounds.push({ round: r - 1, max: gen.max_rounds ? gen.max_rounds - 1 : 0, current, message: current ? gen.message : "" });
  }
  return rounds;
}

/** The last non-empty line of an error or traceback. */
export function lastLine(text) {
  const lines = String(text || "").split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  return lines.length ? lines[lines.length - 1] : "";
}

/** A metadata value by its name with '_' or '-' (the generator writes `generation-id`,
 *  `generation-round`, `parent-version`; the app writes `parent_version`). */
function meta(m, name) {
  return m[name] ?? m[name.replace(/_/g, "-")] ?? "";
}

/** The version a version was made from (0: none), from ScriptVersion.metadata. */
export function parentVersion(metadata) {
  return Number(meta(metadata || {}, "parent_version")) || 0;
}

/** Where a version came from, from ScriptVersion.metadata. */
export function provenance(metadata) {
  const m = metadata || {};
  const parent = parentVersion(m);
  const source = meta(m, "source");
  if (source === "edited") return parent ? `edited from v${parent}` : "edited";
  if (meta(m, "generation_id") || source === "generated" || source === "repaired") {
    const round = Number(meta(m, "round") || meta(m, "generation_round") || 1);
    if (source === "repaired" || round > 1) return `repaired (round ${round})`;
    return parent ? `generated from v${parent}` : "generated";
  }
  return source ? String(source) : "upload";
}

export function formatBytes(n) {
  const size = Number(n || 0);
  if (size < 1024) return `${size} B`;
  const units = ["KB", "MB", "GB"];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A time in the user's locale; "" for the zero timestamp. */
export function formatTime(iso, locale) {
  if (!iso || iso.startsWith("1970-01-01")) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
}

/** Output formats a version has, in a fixed order (never report.json). */
export function modelFormats(status) {
  const have = new Set((status && status.formats) || []);
  return FORMATS.filter((f) => have.has(f));
}

export function previewFormat(formats) {
  return PREVIEW_FORMATS.find((f) => formats.includes(f)) || null;
}

/** Total size of a version's outputs. */
export function outputsSize(status) {
  return ((status && status.outputs) || []).reduce((sum, o) => sum + Number(o.size_bytes || 0), 0);
}

/** A line diff (longest common subsequence): [{op: " "|"-"|"+", text}]. */
export function diffLines(before, after) {
  const a = String(before).split("\n");
  const b = String(after).split("\n");
  const n = a.length;
  const m = b.length;
  if (n * m > 4_000_000) {
    return [...a.map((text) => ({ op: "-", text })), ...b.map((text) => ({ op: "+", text }))];
  }
  const table = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ op: " ", text: a[i] });
      i++;
      j++;
    } else if (table[i + 1][j] >= table[i][j + 1]) {
      out.push({ op: "-", text: a[i++] });
    } else {
      out.push({ op: "+", text: b[j++] });
    }
  }
  while (i < n) out.push({ op: "-", text: a[i++] });
  while (j < m) out.push({ op: "+", text: b[j++] });
  return out;
}

/** Valid project names, as the script service checks them. */
export function validProject(name) {
  return /^[A-Za-z0-9_-]{1,64}$/.test(name);
}

/** The token from a sign-in link (#token=...), or null. */
export function tokenFromHash(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const token = params.get("token");
  return token ? token.trim() : null;
}

export function stateLabel(state) {
  return (
    {
      queued: "queued",
      processing: "processing",
      completed: "ready",
      error: "error",
      timeout: "timed out",
      no_scripts: "no versions",
    }[state] || state || "unknown"
  );
}
