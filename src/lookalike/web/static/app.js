// lookalike web page: plain JavaScript, no build step, talks to the REST API only.
// Routes live in the URL hash: #/ (search), #/like/<id>, #/browse/<page>, #/duplicates,
// #/info. Text from the server (file names, paths) is only ever set as textContent.
"use strict";

const PER_PAGE = 48;
const $ = (selector) => document.querySelector(selector);

// ----- small helpers ---------------------------------------------------------------
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function baseName(path) {
  return String(path).split(/[\\/]/).pop();
}

function setStatus(selector, message, isError = false) {
  const node = $(selector);
  node.textContent = message;
  node.classList.toggle("error", isError);
}

// "Copies and crops first": the server's geometric re-ranking (rerank=verify).
function rerankParam() {
  return $("#copies-first").checked ? "verify" : "none";
}

function wantedK() {
  const k = parseInt($("#k").value, 10);
  return Number.isFinite(k) ? Math.min(100, Math.max(1, k)) : 12;
}

// One card per image: the thumbnail opens "more like this", the name opens the file.
function card(image, hit) {
  const caption = el("figcaption");
  if (hit) {
    caption.append(
      el("span", { class: "line" },
        el("span", { class: "rank", textContent: `#${hit.rank}` }),
        el("span", { class: "score", title: "cosine similarity", textContent: hit.score.toFixed(4) })),
      el("meter", { min: -1, max: 1, value: hit.score, title: "cosine similarity" }),
    );
  }
  caption.append(el("a", {
    class: "name", href: `/api/images/${image.id}`, target: "_blank", rel: "noopener",
    title: image.path, textContent: baseName(image.path),
  }));
  return el("figure", { class: hit ? "card result-card" : "card", "data-id": String(image.id) },
    el("a", { class: "thumb", href: `#/like/${image.id}`, title: "More like this" },
      el("img", { src: `/api/images/${image.id}/thumbnail`, alt: baseName(image.path), loading: "lazy" })),
    caption);
}

// ----- search ----------------------------------------------------------------------
let searchToken = 0; // answers to an older search are dropped
let uploadUrl = null;

function showQuery(src, title, path) {
  $("#query").hidden = false;
  $("#query-image").src = src;
  $("#query-title").textContent = title;
  $("#query-path").textContent = path;
}

function showResults(result, token) {
  if (token !== searchToken) return;
  const cards = result.results.map((hit) => card(hit, hit));
  $("#results").replaceChildren(...cards);
  const n = cards.length;
  // With the box ticked, verified copies lead whatever their score (the score stays cosine).
  const order = $("#copies-first").checked ? "copies and crops first" : "most similar first";
  setStatus("#search-status", n ? `${n} look-alike${n === 1 ? "" : "s"}, ${order}`
    : "No results: the collection has no other images.");
}

function searchFailed(error, token) {
  if (token !== searchToken) return;
  $("#results").replaceChildren();
  setStatus("#search-status", error.message, true);
}

async function searchFile(file) {
  if (!file) return;
  if (location.hash && location.hash !== "#/") history.pushState(null, "", "#/");
  showView("search");
  const token = ++searchToken;
  if (uploadUrl) URL.revokeObjectURL(uploadUrl);
  uploadUrl = URL.createObjectURL(file);
  const name = file.name || "pasted image";
  showQuery(uploadUrl, name, "your image");
  setStatus("#search-status", "Searching…");
  const form = new FormData();
  form.append("file", file, file.name || "pasted-image");
  form.append("k", String(wantedK()));
  form.append("rerank", rerankParam());
  try {
    const data = await api("/api/search", { method: "POST", body: form });
    showResults(data[0], token);
  } catch (error) {
    searchFailed(error, token);
  }
}

async function moreLikeThis(id) {
  const token = ++searchToken;
  showQuery(`/api/images/${id}/thumbnail`, "More like this", "");
  setStatus("#search-status", "Searching…");
  $("#results").replaceChildren();
  try {
    const data = await api(`/api/search?id=${id}&k=${wantedK()}&rerank=${rerankParam()}`);
    if (token !== searchToken) return;
    $("#query-title").textContent = `More like ${baseName(data[0].query)}`;
    $("#query-path").textContent = data[0].query;
    showResults(data[0], token);
  } catch (error) {
    searchFailed(error, token);
  }
}

function firstImageFile(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : (item.kind === "file" ? item.getAsFile() : null);
    if (file && (file.type === "" || file.type.startsWith("image/"))) return file;
  }
  return null;
}

function setUpSearchInputs() {
  const zone = $("#drop-zone");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    searchFile(input.files[0]);
    input.value = ""; // choosing the same file again searches again
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  // Dropping anywhere on the page searches; the zone only lights up.
  window.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  window.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) zone.classList.remove("over");
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = firstImageFile(event.dataTransfer.files);
    if (file) searchFile(file);
    else setStatus("#search-status", "Drop an image file. (An image dragged from another web page "
      + "can't be read here: save it first.)", true);
  });
  window.addEventListener("paste", (event) => {
    const file = firstImageFile(event.clipboardData && event.clipboardData.items);
    if (file) {
      event.preventDefault();
      searchFile(file);
    }
  });
}

// ----- browse ----------------------------------------------------------------------
async function browse(page) {
  setStatus("#browse-status", "Loading…");
  try {
    const data = await api(`/api/images?offset=${(page - 1) * PER_PAGE}&limit=${PER_PAGE}`);
    const pages = Math.max(1, Math.ceil(data.total / PER_PAGE));
    $("#browse-grid").replaceChildren(...data.images.map((image) => card(image, null)));
    $("#page-label").textContent = `Page ${page} of ${pages} (${data.total} images)`;
    $("#prev").disabled = page <= 1;
    $("#next").disabled = page >= pages;
    $("#prev").onclick = () => { location.hash = `#/browse/${page - 1}`; };
    $("#next").onclick = () => { location.hash = `#/browse/${page + 1}`; };
    setStatus("#browse-status", data.total ? "Click an image for more like it."
      : "The collection is empty: index some images with `lookalike index`.");
  } catch (error) {
    setStatus("#browse-status", error.message, true);
  }
}

// ----- near duplicates -------------------------------------------------------------
async function findDuplicates(event) {
  if (event) event.preventDefault();
  const threshold = parseFloat($("#threshold").value);
  setStatus("#dup-status", "Looking for near duplicates…");
  $("#dup-groups").replaceChildren();
  try {
    const groups = await api(`/api/duplicates?threshold=${encodeURIComponent(threshold)}`);
    // Members come representative first, each with its score to the representative;
    // the suggested keeper is marked (lookalike never deletes anything).
    const nodes = groups.map((group) => el("section", { class: "group" },
      el("h3", { textContent: `${group.ids.length} images, least similarity ${group.min_score.toFixed(4)}` }),
      el("div", { class: "grid small" },
        ...group.members.map((member) => {
          const node = card({ id: member.id, path: member.path }, null);
          const caption = node.querySelector("figcaption");
          const line = el("span", { class: "line" },
            el("span", { class: "score", title: "cosine similarity to the representative",
              textContent: member.score.toFixed(4) }));
          if (member.verified) {
            line.append(el("span", { class: "verified",
              title: "below the threshold, but local features match: a rotated, cropped, flipped or grey copy",
              textContent: "verified" }));
          }
          if (member.path === group.keep) {
            node.classList.add("keeper");
            line.append(el("span", { class: "keep", title: "suggested copy to keep (most pixels, largest file, oldest)",
              textContent: "keep" }));
          }
          if (member.width && member.height) {
            line.append(el("span", { class: "dims", textContent: `${member.width}×${member.height}` }));
          }
          caption.prepend(line);
          return node;
        }))));
    $("#dup-groups").replaceChildren(...nodes);
    setStatus("#dup-status", groups.length ? `${groups.length} group${groups.length === 1 ? "" : "s"}`
      : `No near duplicates at similarity ${threshold}.`);
  } catch (error) {
    setStatus("#dup-status", error.message, true);
  }
}

// ----- collection info -------------------------------------------------------------
async function loadInfo() {
  try {
    const info = await api("/api/info");
    const index = info.index || {};
    const rows = [
      ["Collection", info.db],
      ["Model", `${info.model} (${info.dim} dimensions)`],
      ["Images", String(info.count)],
      ["On disk", `${(info.bytes / 1e6).toFixed(1)} MB`],
      ["Search index", index.kind || "?"],
      ["Format version", String(info.format_version)],
    ];
    $("#info-table").replaceChildren(...rows.map(([name, value]) =>
      el("tr", {}, el("th", { textContent: name }), el("td", { textContent: value }))));
    const skipped = info.skipped || [];
    $("#skipped").replaceChildren(...(skipped.length ? skipped.map((s) =>
      el("li", { textContent: `${s.path}: ${s.reason}` })) : [el("li", { textContent: "none" })]));
    setStatus("#info-status", "");
  } catch (error) {
    setStatus("#info-status", error.message, true);
  }
}

async function loadSummary() {
  try {
    const info = await api("/api/info");
    $("#summary").textContent = `${info.count} images · ${info.model}`;
  } catch (error) {
    $("#summary").textContent = error.message;
  }
}

// ----- routing ---------------------------------------------------------------------
function showView(name) {
  for (const section of document.querySelectorAll(".view")) {
    section.hidden = section.id !== `view-${name}`;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function route() {
  const [view, arg] = (location.hash || "#/").replace(/^#\/?/, "").split("/");
  if (view === "like" && /^\d+$/.test(arg || "")) {
    showView("search");
    window.scrollTo(0, 0);
    moreLikeThis(Number(arg));
  } else if (view === "browse") {
    showView("browse");
    browse(Math.max(1, parseInt(arg || "1", 10) || 1));
  } else if (view === "duplicates") {
    showView("duplicates");
  } else if (view === "info") {
    showView("info");
    loadInfo();
  } else {
    showView("search");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpSearchInputs();
  $("#dup-form").addEventListener("submit", findDuplicates);
  window.addEventListener("hashchange", route);
  route();
  loadSummary();
});
