// prnet-keras page: upload a photo to /v1/reconstruct, draw faces + landmarks, rotate the mesh;
// "swap with...": a second photo's face (or eyes, nose, mouth) onto the selected face via /v1/swap.
// Plain WebGL (no libraries); a 2D-canvas painter's-algorithm renderer when WebGL is missing.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { faces: [], image: null, current: 0, rotX: 0, rotY: 0, zoom: 1, renderer: null, mesh: null,
                file: null, refFile: null, swapUrl: null };

function setStatus(text, kind) {
  $("status").textContent = text;
  if (kind) document.body.dataset.state = kind;
}

// ---- upload ------------------------------------------------------------------------------
function apiHeaders() {
  const headers = {};
  const key = $("apikey").value.trim();
  if (key) headers["X-API-Key"] = key;
  return headers;
}

async function reconstruct(file) {
  if (!file) return;
  setStatus(`Reconstructing ${file.name} ...`, "busy");
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  form.append("outputs", "landmarks,pose,mesh_json");
  const headers = apiHeaders();
  let answer;
  try {
    const resp = await fetch("/v1/reconstruct", { method: "POST", body: form, headers });
    answer = await resp.json();
    if (!resp.ok) {
      const e = answer.error || {};
      throw new Error(`${resp.status}: ${e.message || resp.statusText}`);
    }
  } catch (err) {
    setStatus(`Failed: ${err.message}`, "error");
    return;
  }
  state.image = await loadImage(file);
  state.file = file;
  state.faces = answer.faces;
  $("reffile").disabled = false;
  setSwap(state.refFile ? "" : "Now drop a second photo to swap with.", "idle");
  if (state.refFile) swapWith(null);
  drawPhoto();
  const sel = $("face");
  sel.innerHTML = "";
  answer.faces.forEach((f, i) => sel.add(new Option(`face ${i + 1}`, String(i))));
  const has = answer.faces.length > 0;
  for (const id of ["face", "reset", "obj", "ply"]) $(id).disabled = !has;
  if (!has) {
    clearMesh();
    setStatus("No face found in this photo.", "noface");
    $("pose").textContent = "";
    return;
  }
  showFace(0);
  const t = answer.timing_ms || {};
  setStatus(`${answer.n_faces} face(s)${answer.truncated ? " (more not shown: limit)" : ""} · ` +
            `${Math.round((t.reconstruct || 0) + (t.encode || 0))} ms on the server`, "ready");
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = URL.createObjectURL(file);
  });
}

// ---- photo with boxes and landmarks --------------------------------------------------------
function drawPhoto() {
  const c = $("photo"), ctx = c.getContext("2d"), img = state.image;
  const s = Math.min(c.width / img.naturalWidth, c.height / img.naturalHeight);
  const ox = (c.width - img.naturalWidth * s) / 2, oy = (c.height - img.naturalHeight * s) / 2;
  ctx.fillStyle = "#20252b";
  ctx.fillRect(0, 0, c.width, c.height);
  ctx.drawImage(img, ox, oy, img.naturalWidth * s, img.naturalHeight * s);
  state.faces.forEach((f, i) => {
    const hi = i === state.current;
    const d = f.detection;
    ctx.lineWidth = hi ? 2.5 : 1.5;
    ctx.strokeStyle = hi ? "#4cc2ff" : "#9fb3c8";
    if (d && d.box_ltrb) {
      const [l, t, r, b] = d.box_ltrb;
      ctx.strokeRect(ox + l * s, oy + t * s, (r - l) * s, (b - t) * s);
    }
    ctx.fillStyle = hi ? "#7CFC00" : "#e0e000";
    for (const p of f.landmarks || []) {
      ctx.beginPath();
      ctx.arc(ox + p[0] * s, oy + p[1] * s, hi ? 2.2 : 1.6, 0, 2 * Math.PI);
      ctx.fill();
    }
  });
}

// ---- mesh preparation (shared by both renderers) --------------------------------------------
function prepareMesh(m) {
  const n = m.n_vertices, v = m.vertices, tri = m.triangles;
  let cx = 0, cy = 0, cz = 0;
  for (let i = 0; i < n; i++) { cx += v[3 * i]; cy += v[3 * i + 1]; cz += v[3 * i + 2]; }
  cx /= n; cy /= n; cz /= n;
  let r = 1e-6;
  const pos = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    pos[3 * i] = v[3 * i] - cx; pos[3 * i + 1] = v[3 * i + 1] - cy; pos[3 * i + 2] = v[3 * i + 2] - cz;
    r = Math.max(r, Math.hypot(pos[3 * i], pos[3 * i + 1], pos[3 * i + 2]));
  }
  for (let i = 0; i < 3 * n; i++) pos[i] /= r;  // unit sphere
  const nrm = new Float32Array(3 * n);
  for (let t = 0; t < tri.length; t += 3) {
    const a = 3 * tri[t], b = 3 * tri[t + 1], c = 3 * tri[t + 2];
    const ux = pos[b] - pos[a], uy = pos[b + 1] - pos[a + 1], uz = pos[b + 2] - pos[a + 2];
    const wx = pos[c] - pos[a], wy = pos[c + 1] - pos[a + 1], wz = pos[c + 2] - pos[a + 2];
    const nx = uy * wz - uz * wy, ny = uz * wx - ux * wz, nz = ux * wy - uy * wx;
    for (const k of [a, b, c]) { nrm[k] += nx; nrm[k + 1] += ny; nrm[k + 2] += nz; }
  }
  for (let i = 0; i < n; i++) {
    const l = Math.hypot(nrm[3 * i], nrm[3 * i + 1], nrm[3 * i + 2]) || 1;
    nrm[3 * i] /= l; nrm[3 * i + 1] /= l; nrm[3 * i + 2] /= l;
  }
  const col = new Float32Array(3 * n);
  for (let i = 0; i < 3 * n; i++) col[i] = m.colors[i] / 255;
  return { n, pos, nrm, col, idx: new Uint32Array(tri), raw: m };
}

function rotation() {  // column-major 3x3: R = Rx(rotX) * Ry(rotY)
  const cx = Math.cos(state.rotX), sx = Math.sin(state.rotX), cy = Math.cos(state.rotY), sy = Math.sin(state.rotY);
  return [cy, sx * sy, -cx * sy, 0, cx, sx, sy, -sx * cy, cx * cy];
}

// ---- WebGL renderer ----------------------------------------------------------------------------
const VS = `attribute vec3 aPos; attribute vec3 aNrm; attribute vec3 aCol;
uniform mat3 uRot; uniform float uZoom; varying vec3 vCol; varying vec3 vNrm;
void main() { vec3 p = uRot * aPos; vNrm = uRot * aNrm; vCol = aCol;
  gl_Position = vec4(p.xy * 0.9 * uZoom, -p.z * 0.5, 1.0); }`;
const FS = `precision mediump float; varying vec3 vCol; varying vec3 vNrm;
void main() { vec3 n = normalize(vNrm); if (n.z < 0.0) n = -n;
  float l = 0.35 + 0.65 * max(dot(n, normalize(vec3(0.3, 0.4, 1.0))), 0.0);
  gl_FragColor = vec4(vCol * l, 1.0); }`;

function makeWebGL(canvas) {
  const opts = { preserveDrawingBuffer: true, antialias: true };
  const gl = canvas.getContext("webgl", opts) || canvas.getContext("experimental-webgl", opts);
  if (!gl || !gl.getExtension("OES_element_index_uint")) return null;  // 32-bit indices: ~87k triangles
  const sh = (type, src) => {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  };
  const prog = gl.createProgram();
  gl.attachShader(prog, sh(gl.VERTEX_SHADER, VS));
  gl.attachShader(prog, sh(gl.FRAGMENT_SHADER, FS));
  gl.linkProgram(prog);
  if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) return null;
  const buffers = {};
  return {
    name: "WebGL",
    load(mesh) {
      gl.useProgram(prog);
      for (const [attr, data] of [["aPos", mesh.pos], ["aNrm", mesh.nrm], ["aCol", mesh.col]]) {
        if (!buffers[attr]) buffers[attr] = gl.createBuffer();
        gl.bindBuffer(gl.ARRAY_BUFFER, buffers[attr]);
        gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
        const loc = gl.getAttribLocation(prog, attr);
        gl.enableVertexAttribArray(loc);
        gl.vertexAttribPointer(loc, 3, gl.FLOAT, false, 0, 0);
      }
      if (!buffers.idx) buffers.idx = gl.createBuffer();
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, buffers.idx);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, mesh.idx, gl.STATIC_DRAW);
      buffers.count = mesh.idx.length;
    },
    draw() {
      gl.viewport(0, 0, canvas.width, canvas.height);
      gl.clearColor(0.125, 0.145, 0.17, 1);
      gl.enable(gl.DEPTH_TEST);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      if (!buffers.count) return;
      gl.useProgram(prog);
      gl.uniformMatrix3fv(gl.getUniformLocation(prog, "uRot"), false, new Float32Array(rotation()));
      gl.uniform1f(gl.getUniformLocation(prog, "uZoom"), state.zoom);
      gl.drawElements(gl.TRIANGLES, buffers.count, gl.UNSIGNED_INT, 0);
    },
    clear() { buffers.count = 0; this.draw(); },
  };
}

// ---- 2D-canvas fallback: flat-shaded triangles, far to near -------------------------------------
function make2D(canvas) {
  const ctx = canvas.getContext("2d");
  let mesh = null;
  return {
    name: "2D canvas",
    load(m) { mesh = m; },
    draw() {
      ctx.fillStyle = "#20252b";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (!mesh) return;
      const R = rotation(), n = mesh.n, p = new Float32Array(3 * n), half = canvas.width / 2;
      for (let i = 0; i < n; i++) {
        const x = mesh.pos[3 * i], y = mesh.pos[3 * i + 1], z = mesh.pos[3 * i + 2];
        p[3 * i] = half + half * 0.9 * state.zoom * (R[0] * x + R[3] * y + R[6] * z);
        p[3 * i + 1] = half - half * 0.9 * state.zoom * (R[1] * x + R[4] * y + R[7] * z);
        p[3 * i + 2] = R[2] * x + R[5] * y + R[8] * z;
      }
      const idx = mesh.idx, nt = idx.length / 3, order = new Uint32Array(nt), depth = new Float32Array(nt);
      for (let t = 0; t < nt; t++) { order[t] = t; depth[t] = p[3 * idx[3 * t] + 2] + p[3 * idx[3 * t + 1] + 2] + p[3 * idx[3 * t + 2] + 2]; }
      order.sort((a, b) => depth[a] - depth[b]);
      for (const t of order) {
        const a = idx[3 * t], b = idx[3 * t + 1], c = idx[3 * t + 2];
        const ux = p[3 * b] - p[3 * a], uy = p[3 * b + 1] - p[3 * a + 1], wx = p[3 * c] - p[3 * a], wy = p[3 * c + 1] - p[3 * a + 1];
        const area = Math.abs(ux * wy - uy * wx);
        const shade = 0.35 + 0.65 * Math.min(1, area / (Math.hypot(ux, uy) * Math.hypot(wx, wy) + 1e-9));
        const r = (mesh.col[3 * a] + mesh.col[3 * b] + mesh.col[3 * c]) / 3 * shade * 255;
        const g = (mesh.col[3 * a + 1] + mesh.col[3 * b + 1] + mesh.col[3 * c + 1]) / 3 * shade * 255;
        const bl = (mesh.col[3 * a + 2] + mesh.col[3 * b + 2] + mesh.col[3 * c + 2]) / 3 * shade * 255;
        ctx.fillStyle = `rgb(${r | 0},${g | 0},${bl | 0})`;
        ctx.strokeStyle = ctx.fillStyle;
        ctx.beginPath();
        ctx.moveTo(p[3 * a], p[3 * a + 1]); ctx.lineTo(p[3 * b], p[3 * b + 1]); ctx.lineTo(p[3 * c], p[3 * c + 1]);
        ctx.closePath(); ctx.fill(); ctx.stroke();
      }
    },
    clear() { mesh = null; this.draw(); },
  };
}

function renderer() {
  if (!state.renderer) {
    let r = null;
    // ?renderer=2d forces the fallback (also how the tests exercise it)
    const force2d = new URLSearchParams(location.search).get("renderer") === "2d";
    if (!force2d) { try { r = makeWebGL($("mesh")); } catch (e) { r = null; } }
    state.renderer = r || make2D($("mesh"));
    $("renderer").textContent = `renderer: ${state.renderer.name}`;
    document.body.dataset.renderer = state.renderer.name === "WebGL" ? "webgl" : "2d";
  }
  return state.renderer;
}

function showFace(i) {
  state.current = i;
  const f = state.faces[i];
  state.mesh = prepareMesh(f.mesh.json);
  state.rotX = 0; state.rotY = 0; state.zoom = 1;
  renderer().load(state.mesh);
  renderer().draw();
  drawPhoto();
  const p = f.pose || {};
  $("pose").textContent = `face ${i + 1}: ${f.mesh.n_vertices} vertices, ${f.mesh.n_triangles} triangles\n` +
    `pose: pitch ${fmt(p.pitch_deg)}°, yaw ${fmt(p.yaw_deg)}°, roll ${fmt(p.roll_deg)}°, scale ${fmt(p.scale)}`;
  document.body.dataset.meshVertices = String(f.mesh.n_vertices);
}

const fmt = (x) => (typeof x === "number" ? x.toFixed(1) : "?");

function clearMesh() { state.mesh = null; renderer().clear(); }

// ---- downloads (built here from the mesh the page already has; same y-up frame as the API) -------
function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

function objBlob(m) {
  const v = m.vertices, c = m.colors, t = m.triangles, parts = ["# prnet-keras face mesh (y up, image pixels)\n"];
  for (let i = 0; i < m.n_vertices; i++)
    parts.push(`v ${v[3 * i]} ${v[3 * i + 1]} ${v[3 * i + 2]} ${(c[3 * i] / 255).toFixed(4)} ${(c[3 * i + 1] / 255).toFixed(4)} ${(c[3 * i + 2] / 255).toFixed(4)}\n`);
  for (let k = 0; k < t.length; k += 3) parts.push(`f ${t[k] + 1} ${t[k + 1] + 1} ${t[k + 2] + 1}\n`);
  return new Blob(parts, { type: "text/plain" });
}

function plyBlob(m) {
  const n = m.n_vertices, nt = m.triangles.length / 3;
  const header = "ply\nformat binary_little_endian 1.0\ncomment prnet-keras face mesh (y up, image pixels)\n" +
    `element vertex ${n}\nproperty float x\nproperty float y\nproperty float z\n` +
    "property uchar red\nproperty uchar green\nproperty uchar blue\n" +
    `element face ${nt}\nproperty list uchar int vertex_indices\nend_header\n`;
  const buf = new DataView(new ArrayBuffer(n * 15 + nt * 13));
  let o = 0;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 3; k++) { buf.setFloat32(o, m.vertices[3 * i + k], true); o += 4; }
    for (let k = 0; k < 3; k++) { buf.setUint8(o, m.colors[3 * i + k]); o += 1; }
  }
  for (let t = 0; t < nt; t++) {
    buf.setUint8(o, 3); o += 1;
    for (let k = 0; k < 3; k++) { buf.setInt32(o, m.triangles[3 * t + k], true); o += 4; }
  }
  return new Blob([header, buf.buffer], { type: "application/octet-stream" });
}

// ---- swap with a second photo ------------------------------------------------------------------
function setSwap(text, kind) {
  if (text) $("swapstatus").textContent = text;
  if (kind) document.body.dataset.swap = kind;
}

async function swapWith(file) {
  if (file) state.refFile = file;
  if (!state.file || !state.refFile) return;
  const region = $("region").value;
  setSwap(`Putting the ${region === "face" ? "face" : region} of ${state.refFile.name} onto face ${state.current + 1} ...`, "busy");
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo");
  form.append("ref", state.refFile, state.refFile.name || "reference");
  form.append("region", region);
  form.append("color_transfer", $("colortransfer").checked ? "true" : "false");
  if (state.faces.length) form.append("face", String(state.current));
  let blob, resp;
  try {
    resp = await fetch("/v1/swap", { method: "POST", body: form, headers: apiHeaders() });
    if (!resp.ok) {
      let message = resp.statusText;
      try { message = (await resp.json()).error.message || message; } catch (e) { /* not JSON */ }
      throw new Error(`${resp.status}: ${message}`);
    }
    blob = await resp.blob();
  } catch (err) {
    $("swapfigure").hidden = true;
    setSwap(`Failed: ${err.message}`, "error");
    return;
  }
  if (state.swapUrl) URL.revokeObjectURL(state.swapUrl);
  state.swapUrl = URL.createObjectURL(blob);
  const img = $("swapresult");
  await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = state.swapUrl; });
  const link = $("swapdownload");
  link.href = state.swapUrl;
  link.download = `swap-${region}.jpg`;
  $("swapfigure").hidden = false;
  $("swapbtn").disabled = false;
  const pairs = (resp.headers.get("X-Swap-Pairs") || "").replace(/(\d+)<-(\d+)/g, (m, t, s) => `face ${+t + 1} ← face ${+s + 1}`);
  setSwap(`Done: ${pairs || "swapped"} (${region}). Save it with the link below.`, "ready");
}

// ---- events ---------------------------------------------------------------------------------------
// A drop zone: highlighted while a file is dragged over it, onDrop(files) when one is dropped.
function dropZone(zone, onDrop) {
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onDrop(e.dataTransfer.files);
  });
}

function wire() {
  $("file").addEventListener("change", (e) => reconstruct(e.target.files[0]));
  dropZone($("drop"), (files) => { if (files.length) reconstruct(files[0]); });
  $("face").addEventListener("change", (e) => showFace(Number(e.target.value)));
  $("reffile").addEventListener("change", (e) => swapWith(e.target.files[0]));
  dropZone($("refdrop"), (files) => {
    if (!state.file) { setSwap("Choose the photo to edit above first.", "error"); return; }
    if (files.length) swapWith(files[0]);
  });
  for (const id of ["region", "colortransfer"]) $(id).addEventListener("change", () => swapWith(null));
  $("swapbtn").addEventListener("click", () => swapWith(null));
  $("reset").addEventListener("click", () => { state.rotX = state.rotY = 0; state.zoom = 1; renderer().draw(); });
  $("obj").addEventListener("click", () => download(`face${state.current + 1}.obj`, objBlob(state.mesh.raw)));
  $("ply").addEventListener("click", () => download(`face${state.current + 1}.ply`, plyBlob(state.mesh.raw)));
  const mesh = $("mesh");
  let drag = null;
  mesh.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY }; mesh.setPointerCapture(e.pointerId); });
  mesh.addEventListener("pointerup", () => { drag = null; });
  mesh.addEventListener("pointermove", (e) => {
    if (!drag || !state.mesh) return;
    state.rotY += (e.clientX - drag.x) * 0.01;
    state.rotX = Math.max(-1.5, Math.min(1.5, state.rotX + (e.clientY - drag.y) * 0.01));
    drag = { x: e.clientX, y: e.clientY };
    renderer().draw();
  });
  mesh.addEventListener("wheel", (e) => {
    if (!state.mesh) return;
    e.preventDefault();
    state.zoom = Math.max(0.3, Math.min(5, state.zoom * Math.exp(-e.deltaY * 0.001)));
    renderer().draw();
  }, { passive: false });
  renderer().draw();
}

wire();
