// Projects: the caller's projects, newest activity first, with the latest version's status.

import { get, p } from "../api.js";
import { h, fill } from "../dom.js";
import { formatTime, stateLabel, validProject } from "../logic.js";
import { navigate } from "../main.js";

export function projectsView(main) {
  let gone = false;
  const list = h("div", { class: "project-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading projects…"));
  const more = h("div", {});
  const name = h("input", { id: "new-project", name: "project", placeholder: "e.g. bracket-v2", pattern: "[A-Za-z0-9_\\-]{1,64}", required: true, autocomplete: "off" });
  const problem = h("p", { class: "error-text", role: "alert" });
  const form = h(
    "form",
    {
      class: "new-project",
      onsubmit: (event) => {
        event.preventDefault();
        const project = name.value.trim();
        if (!validProject(project)) {
          fill(problem, "A project name is 1 to 64 letters, digits, '-' or '_'.");
          return;
        }
        const known = list.querySelector(`[data-project="${CSS.escape(project)}"]`);
        navigate(`/projects/${encodeURIComponent(project)}`, known ? null : { created: true });
      },
    },
    h("label", { for: "new-project" }, "New project"),
    h("div", { class: "row" }, name, h("button", { type: "submit" }, "Create")),
    problem,
  );
  fill(main, h("div", { class: "page" }, h("div", { class: "page-head" }, h("h1", {}, "Projects"), form), list, more));

  async function load(token) {
    const page = await get(`/projects?page_size=50${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
    if (gone) return;
    if (!token) fill(list);
    if (!page.projects.length && !token) {
      fill(list, h("div", { class: "empty card" }, h("p", {}, "No projects yet."), h("p", { class: "muted" }, "Name one above, then type a prompt or drop a FreeCAD script.")));
    }
    for (const project of page.projects) list.append(row(project));
    fill(more, page.next_page_token ? h("button", { type: "button", class: "secondary", onclick: () => load(page.next_page_token) }, "More projects") : null);
  }

  function row(project) {
    const state = h("span", { class: "badge" }, "…");
    const item = h(
      "a",
      { class: "project-row card", href: `/projects/${encodeURIComponent(project.project)}`, "data-link": true, dataset: { project: project.project } },
      h("span", { class: "project-name" }, project.project),
      h("span", { class: "muted" }, project.latest_version ? `v${project.latest_version}` : "no versions"),
      state,
      h("time", { class: "muted", datetime: project.updated_at }, formatTime(project.updated_at)),
    );
    if (project.latest_version) {
      get(`${p(project.project)}/status`)
        .then((status) => {
          state.className = `badge ${status.state}`;
          fill(state, stateLabel(status.state));
        })
        .catch(() => fill(state, "?"));
    } else {
      fill(state, stateLabel("no_scripts"));
    }
    return item;
  }

  load("").catch((error) => {
    if (!gone && error.status !== 401) fill(list, h("p", { class: "error-text", role: "alert" }, `Could not list the projects: ${error.message}`));
  });
  return () => {
    gone = true;
  };
}
