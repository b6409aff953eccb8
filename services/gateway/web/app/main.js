// The app's entry: takes a sign-in link's token, routes URLs to views, sends a 401 back to
// sign-in with the server's message.

import { session, whenUnauthorized, get } from "./api.js";
import { fill, h, notice } from "./dom.js";
import { tokenFromHash } from "./logic.js";
import { signInView } from "./views/signin.js";
import { projectsView } from "./views/projects.js";
import { projectView } from "./views/project.js";

let leave = () => {};

function main() {
  const token = tokenFromHash(location.hash);
  if (token) {
    session.set(token);
    history.replaceState(null, "", location.pathname + location.search); // off the URL
  }
  whenUnauthorized((message) => signOut(`Signed out: ${message}`));
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-link]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", () => route());
  route();
}

export function navigate(path, state) {
  history.pushState(state || null, "", path);
  route();
}

export function signOut(message) {
  session.clear();
  if (message) sessionStorage.setItem("cadpipe.signin-message", message);
  navigate("/signin");
}

function route() {
  leave();
  leave = () => {};
  const main = document.getElementById("main");
  const path = location.pathname;
  showWho();
  if (path !== "/signin") notice("");
  if (!session.token && path !== "/signin") {
    sessionStorage.setItem("cadpipe.after-signin", path);
    history.replaceState(null, "", "/signin");
    return route();
  }
  const project = path.match(/^\/projects\/([^/]+)\/?$/);
  if (path === "/signin") leave = signInView(main) || leave;
  else if (path === "/" || path === "/projects") leave = projectsView(main) || leave;
  else if (project) leave = projectView(main, decodeURIComponent(project[1]), history.state || {}) || leave;
  else fill(main, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "/", "data-link": true }, "Back to your projects")));
  main.focus({ preventScroll: true });
}

function showWho() {
  const who = document.getElementById("who");
  if (!session.token) {
    fill(who);
    return;
  }
  fill(who, h("button", { type: "button", class: "secondary small", onclick: () => signOut("Signed out.") }, "Sign out"));
}

export { get };

main();
