// Sign-in: an API token, checked against the API, kept in sessionStorage (this tab only).

import { ApiError, get, session } from "../api.js";
import { h, fill } from "../dom.js";
import { navigate } from "../main.js";

export function signInView(main) {
  // kept until the next sign-in, so that a reload still says why the tab was signed out
  const message = sessionStorage.getItem("cadpipe.signin-message");
  const error = h("p", { class: "error-text", id: "signin-error", role: "alert" }, message || "");
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "cpt_…",
    required: true,
    "aria-describedby": "signin-error signin-help",
  });
  const form = h(
    "form",
    { class: "card signin", onsubmit: (event) => submit(event) },
    h("h1", {}, "Sign in to cadpipe"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "muted", id: "signin-help" }, "The token `make run` prints, or one from `python -m services.gateway tokens create`. It is kept for this browser tab only."),
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  fill(main, form);
  input.focus();

  async function submit(event) {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    session.set(token);
    try {
      await get("/projects?page_size=1");
    } catch (failure) {
      session.clear();
      const text = failure instanceof ApiError && failure.status === 401 ? `That token was refused: ${failure.message}` : failure.message;
      fill(error, text);
      return;
    }
    sessionStorage.removeItem("cadpipe.signin-message");
    const next = sessionStorage.getItem("cadpipe.after-signin") || "/";
    sessionStorage.removeItem("cadpipe.after-signin");
    navigate(next === "/signin" ? "/" : next);
  }
}
