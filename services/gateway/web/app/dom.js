// A small element builder: h("button", {class: "x", onclick: f}, "text", child, ...).

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Shows a message in the notice bar (kind: "info" | "error"). */
export function notice(message, kind = "info") {
  const bar = document.getElementById("notice");
  if (!message) {
    fill(bar);
    return;
  }
  fill(bar, h("div", { class: `notice ${kind}` }, h("span", {}, message), h("button", { class: "link", type: "button", "aria-label": "Dismiss", onclick: () => fill(bar) }, "×")));
}
