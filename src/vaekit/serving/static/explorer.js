// vaekit latent explorer: plain JavaScript, no build step, talking only to the same server's JSON API.
//
//   /v1/model  -> data shape, latent size          /v1/sample -> the grid      /v1/encode -> each sample's code
//   slider move -> /v1/decode of the edited code   A, B chosen -> /v1/interpolate strip
//   audio models: every drawn spectrogram -> /v1/sound -> an <audio> element beside it
//
// No model maths happens here: the page edits latent codes and draws what the server returns.
//
// body[data-state]: "loading" until the model card and the first samples, code and decoded image arrived (every
// control disabled, a loading message shown), then "ready"; "busy" while a later request runs; "error" if loading
// failed (the message says what failed; the controls stay disabled, as there is nothing to explore).
"use strict";

const SAMPLES = 16;
const STRIP_STEPS = 8;
const SLIDER_SPAN = 3; // sliders run over [-3, 3]: nearly all of the N(0, 1) prior of each dimension
const CELL_PX = 56;
const CONTROLS = "#sliders input, #temperature, #label, #new-samples, #reset-sliders, #method";

const state = { card: null, codes: [], samples: [], a: 0, b: 1, z: [], decoding: false, pending: false };
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  let response, text;
  try {
    response = await fetch(path, init);
    text = await response.text();
  } catch (error) {
    throw new Error(`${path}: ${error.message} (is the server still running?)`);
  }
  let data = null;
  try { data = JSON.parse(text); } catch { /* not JSON: uvicorn answers requests it cannot parse in plain text */ }
  if (!response.ok) {
    throw new Error(`${path}: ${errorText(response, data, text)}`);
  }
  if (data === null) throw new Error(`${path}: the answer is not JSON`);
  return data;
}

// The API's errors are {"detail": [{"loc", "msg"}, ...]} or {"detail": "..."}; anything else is shown as it came.
function errorText(response, data, text) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  if (typeof detail === "string") return detail;
  return `${response.status} ${text.trim().slice(0, 300) || response.statusText}`;
}

function setStatus(text) { $("status").textContent = text; }

// The page's state (see the top of this file), the loading message and whether the controls can be used.
function setState(name, message) {
  document.body.dataset.state = name;
  const working = name === "loading" || name === "busy";
  $("loading").hidden = !working;
  if (message) $("loading-text").textContent = message;
}

function enableControls(enabled) {
  document.querySelectorAll(CONTROLS).forEach((control) => { control.disabled = !enabled; });
  $("sliders").setAttribute("aria-busy", String(!enabled));
}

// Draw one example on a canvas, scaled up without smoothing: an image (C, H, W) with values in [0, 1], or, for
// audio models, a log-mel spectrogram (1, mels, frames) in the model's standardized units.
function draw(canvas, image) {
  const pixels = audio() ? spectrogramPixels(image) : imagePixels(image);
  const native = document.createElement("canvas");
  native.width = pixels.width;
  native.height = pixels.height;
  native.getContext("2d").putImageData(pixels, 0, 0);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(native, 0, 0, canvas.width, canvas.height);
  canvas.dataset.version = String(Number(canvas.dataset.version || 0) + 1);
}

function imagePixels(image) {
  const [channels, height, width] = state.card.data_shape;
  const pixels = new ImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const offset = 4 * (y * width + x);
      for (let c = 0; c < 3; c++) {
        const value = image[channels === 1 ? 0 : c][y][x];
        pixels.data[offset + c] = Math.round(255 * Math.min(1, Math.max(0, value)));
      }
      pixels.data[offset + 3] = 255;
    }
  }
  return pixels;
}

// -- audio models: spectrograms drawn as pictures, clips played by an <audio> element beside each -------------------
const GRIFFIN_LIM_ITERS = 32; // phase estimate of the clips the page plays (vaekit sample's default is the model's)
const TOP_DB = 80; // a spectrogram shows its loudest 80 dB
const MAGMA = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];

function audio() { return Boolean(state.card) && state.card.modality === "audio"; }

function magma(level) {
  const t = Math.min(1, Math.max(0, level)) * (MAGMA.length - 1);
  const i = Math.min(MAGMA.length - 2, Math.floor(t));
  return MAGMA[i].map((v, c) => Math.round(v + (t - i) * (MAGMA[i + 1][c] - v)));
}

// dB = x * db_std + db_mean (the model's standardization); low frequencies at the bottom.
function spectrogramPixels(image) {
  const [, mels, frames] = state.card.data_shape;
  const { db_mean: mean, db_std: std } = state.card.preprocessing;
  const rows = image[0];
  let top = -Infinity;
  rows.forEach((row) => row.forEach((v) => { top = Math.max(top, v * std + mean); }));
  const pixels = new ImageData(frames, mels);
  for (let m = 0; m < mels; m++) {
    for (let t = 0; t < frames; t++) {
      const offset = 4 * ((mels - 1 - m) * frames + t);
      const [r, g, b] = magma((rows[m][t] * std + mean - (top - TOP_DB)) / TOP_DB);
      pixels.data.set([r, g, b, 255], offset);
    }
  }
  return pixels;
}

// Each canvas gets an <audio controls> element right after it, playing the clip of the example drawn on it.
async function attachSounds(canvases, x) {
  const { wav } = await api("/v1/sound", { x, griffin_lim_iters: GRIFFIN_LIM_ITERS });
  canvases.forEach((canvas, i) => {
    let player = canvas.nextElementSibling;
    if (!player || player.tagName !== "AUDIO") {
      player = document.createElement("audio");
      player.controls = true;
      player.preload = "auto";
      player.setAttribute("aria-label", `play ${canvas.getAttribute("aria-label") || "clip"}`);
      canvas.after(player);
    }
    player.src = `data:audio/wav;base64,${wav[i]}`;
    player.dataset.version = String(Number(player.dataset.version || 0) + 1);
  });
}

// Image models put canvases straight into the grid and the strip; audio models a cell of canvas and player.
function cell(canvas) {
  if (!audio()) return canvas;
  const box = document.createElement("div");
  box.className = "clip";
  box.appendChild(canvas);
  return box;
}

function cellSize() {
  const [, height, width] = state.card.data_shape;
  const scale = Math.max(audio() ? 2 : 1, Math.round(CELL_PX / Math.max(height, width)));
  return [width * scale, height * scale];
}

function makeCanvas(label) {
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = cellSize();
  canvas.setAttribute("aria-label", label);
  return canvas;
}

// A conditional model draws everything as the chosen class; an unconditional one takes no label at all.
function label() { return state.card.num_classes > 0 ? Number($("label").value) : undefined; }

async function newSamples() {
  const temperature = Number($("temperature").value);
  const { x } = await api("/v1/sample", { n: SAMPLES, temperature, label: label() });
  if (document.body.dataset.state === "loading") $("loading-text").textContent = "loading the samples' latent codes…";
  const { mean } = await api("/v1/encode", { x, y: label() });
  state.samples = x;
  state.codes = mean;
  const grid = $("grid");
  grid.replaceChildren();
  x.forEach((image, i) => {
    const canvas = makeCanvas(`sample ${i}`);
    canvas.dataset.index = String(i);
    canvas.addEventListener("click", () => run(() => choose(i)));
    grid.appendChild(cell(canvas));
    draw(canvas, image);
  });
  if (audio()) await attachSounds(Array.from(grid.querySelectorAll("canvas")), x);
  state.a = 0;
  state.b = 1;
  await showChosen();
}

async function choose(i) {
  if (i === state.a) return;
  state.b = state.a;
  state.a = i;
  await showChosen();
}

async function showChosen() {
  document.querySelectorAll("#grid canvas").forEach((canvas, i) => {
    canvas.classList.toggle("a", i === state.a);
    canvas.classList.toggle("b", i === state.b);
  });
  setSliders(state.codes[state.a]);
  if (document.body.dataset.state === "loading") $("loading-text").textContent = "loading the decoded image…";
  await Promise.all([decodeCurrent(), interpolate()]);
}

function buildSliders(latentDim) {
  const box = $("sliders");
  box.replaceChildren();
  for (let d = 0; d < latentDim; d++) {
    const label = document.createElement("label");
    label.htmlFor = `dim-${d}`;
    label.textContent = `z${d}`;
    const slider = document.createElement("input");
    // value after min and max (in this order): set before them, the thumb would sit pinned at the end
    Object.assign(slider, {
      type: "range", id: `dim-${d}`, min: -SLIDER_SPAN, max: SLIDER_SPAN, step: 0.01, value: 0, disabled: true,
    });
    slider.dataset.dim = String(d);
    const value = document.createElement("output");
    value.id = `dim-${d}-value`;
    slider.addEventListener("input", () => {
      state.z[d] = Number(slider.value);
      value.textContent = state.z[d].toFixed(2);
      decodeCurrent().catch((error) => setStatus(error.message));
    });
    box.append(label, slider, value);
  }
}

function setSliders(code) {
  state.z = code.slice();
  code.forEach((v, d) => {
    $(`dim-${d}`).value = String(v); // the browser clamps the thumb to [-3, 3]; the code keeps its value
    $(`dim-${d}-value`).textContent = v.toFixed(2);
  });
}

// Decode the edited code; while one request is in flight, only the latest edit is sent next (by that call, whose
// promise fails if a decode does).
async function decodeCurrent() {
  if (state.decoding) { state.pending = true; return; }
  state.decoding = true;
  try {
    do {
      state.pending = false;
      const { x } = await api("/v1/decode", { z: [state.z], y: label() });
      draw($("decoded"), x[0]);
      if (audio()) await attachSounds([$("decoded")], x);
    } while (state.pending);
  } finally {
    state.decoding = false;
  }
}

async function interpolate() {
  const body = {
    z_a: state.codes[state.a], z_b: state.codes[state.b], steps: STRIP_STEPS, method: $("method").value, label: label(),
  };
  const { x } = await api("/v1/interpolate", body);
  const strip = $("strip");
  strip.replaceChildren();
  x.forEach((image, i) => {
    const canvas = makeCanvas(`interpolation step ${i}`);
    strip.appendChild(cell(canvas));
    draw(canvas, image);
  });
  if (audio()) await attachSounds(Array.from(strip.querySelectorAll("canvas")), x);
}

// A later task (new samples, another A, another path): "busy" while it runs; a failure is shown, the page stays usable.
async function run(task) {
  const ready = ["ready", "busy"].includes(document.body.dataset.state);
  if (!ready) return; // a sample clicked while the page is still loading (or failed to)
  const button = $("new-samples");
  button.disabled = true;
  setState("busy", "updating…");
  try {
    await task();
    setStatus("");
  } catch (error) {
    setStatus(error.message);
  } finally {
    button.disabled = false;
    setState("ready");
  }
}

async function start() {
  state.card = await api("/v1/model");
  const card = state.card;
  const elbo = card.metrics && typeof card.metrics.val_elbo === "number" ? `, validation ELBO ${card.metrics.val_elbo.toFixed(2)} nats` : "";
  $("summary").textContent = `${card.config.architecture} VAE, ${card.config.likelihood} likelihood, ` +
    `${card.latent_dim} latent dimensions, data ${card.data_shape.join(" x ")}${elbo}`;
  if (audio()) {
    const { sample_rate: rate, clip_samples: samples } = card.preprocessing;
    $("summary").textContent += ` (log-mel spectrograms of ${(samples / rate).toFixed(2)} s clips at ${rate} Hz; ` +
      "press play under a spectrogram to hear it)";
  }
  buildSliders(card.latent_dim);
  if (card.num_classes > 0) {
    const select = $("label");
    for (let k = 0; k < card.num_classes; k++) select.add(new Option(String(k), String(k)));
    $("label-control").hidden = false;
    select.addEventListener("change", () => run(newSamples));
  }
  $("new-samples").addEventListener("click", () => run(newSamples));
  $("temperature").addEventListener("input", () => {
    $("temperature-value").textContent = Number($("temperature").value).toFixed(2);
  });
  $("temperature").addEventListener("change", () => run(newSamples));
  $("method").addEventListener("change", () => run(interpolate));
  $("reset-sliders").addEventListener("click", () => run(async () => {
    setSliders(state.codes[state.a]);
    await decodeCurrent();
  }));
  const [width, height] = cellSize();
  $("decoded").width = 3 * width;
  $("decoded").height = 3 * height;
  $("loading-text").textContent = "loading samples…";
  await newSamples();
}

// Loading: nothing can be used until the model card and the first decoded image are here.
async function load() {
  setState("loading", "loading the model card…");
  enableControls(false);
  try {
    await start();
  } catch (error) {
    setStatus(`could not load the explorer: ${error.message}; reload the page to try again`);
    setState("error");
    return;
  }
  enableControls(true);
  setStatus("");
  setState("ready");
}

load();
