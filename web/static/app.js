// The facedit page: plain JavaScript over the JSON API (no build step, nothing from elsewhere).
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;        // /api/attributes
let latentId = null;    // the chosen face
let timer = null;       // debounce of edits
let sent = 0;           // the newest request wins
const DEBOUNCE_MS = 120;

function showError(message) {
  $("error").textContent = message;
  $("error").style.display = message ? "block" : "none";
}

async function api(path, options) {
  let resp;
  try {
    resp = await fetch(path, options);
  } catch (e) {
    throw new Error("The web service cannot be reached.");
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    throw new Error((body && body.error) || `The request failed (HTTP ${resp.status}).`);
  }
  return body;
}

async function loadAttributes() {
  info = await api("/api/attributes");
  const sliders = $("sliders");
  sliders.textContent = "";
  for (const name of info.attributes) {
    const [lo, hi] = info.ranges[name] || [-3, 3];
    const limit = Math.max(Math.abs(lo), Math.abs(hi), 1) * 2;
    const row = document.createElement("div");
    row.className = "control";
    row.innerHTML = `<label for="s-${name}">${name}</label>
      <input type="range" id="s-${name}" data-attr="${name}" min="${-limit}" max="${limit}" step="${limit / 50}" value="0">
      <output id="v-${name}">0</output>
      <label><input type="checkbox" id="k-${name}" data-keep="${name}"> keep</label>`;
    sliders.appendChild(row);
  }
  const method = $("method");
  method.textContent = "";
  for (const m of info.methods) {
    const opt = new Option(m + (m === info.default_method ? " (default)" : ""), m);
    opt.selected = m === info.default_method;
    method.add(opt);
  }
  sliders.addEventListener("input", (e) => {
    if (e.target.dataset.attr) $("v-" + e.target.dataset.attr).textContent = Number(e.target.value).toFixed(2);
    schedule();
  });
  sliders.addEventListener("change", schedule);
}

function showFaces(faces) {
  const box = $("faces");
  box.textContent = "";
  const p = document.createElement("p");
  p.textContent = faces.length === 1 ? "1 face found:" : `${faces.length} faces found (click one):`;
  box.appendChild(p);
  faces.forEach((face, i) => {
    const b = document.createElement("button");
    b.className = "face";
    b.title = face.box ? `face ${i + 1}, detector score ${face.score}` : `seed ${face.seed}`;
    const img = document.createElement("img");
    img.src = face.image;
    img.alt = `face ${i + 1}`;
    b.appendChild(img);
    b.addEventListener("click", () => choose(face, b));
    box.appendChild(b);
  });
  choose(faces[0], box.querySelector("button"));
}

function describeInversion(face) {
  const r = face.inversion;
  $("inversion").textContent = r ? `faithful inversion: identity ${r.identity_before.toFixed(2)} → ` +
    `${r.identity_after.toFixed(2)} (FaceNet cosine to the photo's face), ${r.steps} steps in ` +
    `${r.seconds.toFixed(1)} s` : "";
}

function choose(face, button) {
  document.querySelectorAll("#faces button").forEach((b) => b.classList.remove("chosen"));
  button.classList.add("chosen");
  latentId = face.latent_id;
  describeInversion(face);
  $("before").src = face.image;
  $("after").src = face.image;
  $("editor").hidden = false;
  schedule();
}

function request() {
  const edits = {}, keep = [];
  for (const el of document.querySelectorAll("#sliders input[type=range]")) {
    const v = Number(el.value);
    if (v !== 0) edits[el.dataset.attr] = v;
  }
  for (const el of document.querySelectorAll("#sliders input[data-keep]")) {
    if (el.checked) keep.push(el.dataset.keep);
  }
  return { latent_id: latentId, edits, keep, method: $("method").value, text: $("phrase").value,
           text_strength: Number($("phrase-strength").value) };
}

function schedule() {
  if (!latentId) return;
  clearTimeout(timer);
  timer = setTimeout(edit, DEBOUNCE_MS);
}

async function edit() {
  const mine = ++sent;
  const body = request();
  const t0 = performance.now();
  $("status").textContent = "editing ...";
  try {
    const resp = await api("/api/edit", { method: "POST", headers: { "content-type": "application/json" },
                                          body: JSON.stringify(body) });
    if (mine !== sent) return;  // a newer edit is on its way
    $("before").src = resp.original;
    $("after").src = resp.image;
    $("in-photo").hidden = !resp.photo;  // a face from a photo: the whole photo with the face edited
    if (resp.photo) {
      $("in-photo-img").src = resp.photo;
      $("photo-caption").textContent = resp.identity === null ? "in the photo"
        : `in the photo (identity ${resp.identity.toFixed(2)})`;
    }
    showError("");
    const ms = Math.round(performance.now() - t0);
    $("status").textContent = `answered in ${ms} ms (gateway ${resp.ms} ms)`;
    $("status").dataset.ms = ms;
    $("status").dataset.count = mine;
  } catch (e) {
    if (mine !== sent) return;
    showError(e.message);
    $("status").textContent = "";
  }
}

async function upload() {
  const file = $("photo").files[0];
  if (!file) { showError("Choose a photo first."); return; }
  const faithful = $("faithful").checked;
  const form = new FormData();
  form.append("file", file);
  form.append("fidelity", faithful ? "faithful" : "fast");
  await findFaces(() => api("/api/photo", { method: "POST", body: form }),
                  faithful ? "inverting the face… (a few seconds)" : "looking for faces ...");
}

async function findFaces(call, waiting = "looking for faces ...") {
  showError("");
  $("inversion").textContent = "";
  $("faces").textContent = waiting;
  try {
    const resp = await call();
    showFaces(resp.faces);
  } catch (e) {
    $("faces").textContent = "";
    showError(e.message);
  }
}

$("upload").addEventListener("click", upload);
$("photo").addEventListener("change", upload);
$("random").addEventListener("click", () => findFaces(() => api("/api/random", {
  method: "POST", headers: { "content-type": "application/json" }, body: "{}" })));
$("phrase").addEventListener("input", schedule);
$("phrase-strength").addEventListener("input", schedule);
$("method").addEventListener("change", schedule);
$("reset").addEventListener("click", () => {
  document.querySelectorAll("#sliders input[type=range]").forEach((el) => {
    el.value = 0; $("v-" + el.dataset.attr).textContent = "0"; });
  document.querySelectorAll("#sliders input[data-keep]").forEach((el) => { el.checked = false; });
  $("phrase").value = "";
  schedule();
});
loadAttributes().catch((e) => showError(e.message));
